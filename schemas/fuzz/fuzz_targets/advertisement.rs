//! Fuzzes the `ServerAdvertisement` parser. Seed corpus: `schemas/examples/`.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::check::<xeno_schemas::documents::ServerAdvertisement>(data));
