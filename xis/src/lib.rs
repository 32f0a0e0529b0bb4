//! # xeno-xis: the XenoServer Information Service
//!
//! Section III of the paper: XenoServers advertise signed XML status; records age out without
//! updates; clients look servers up through an inverted file from tokens and value ranges to
//! servers. This crate will hold the `xis` daemon serving `xenoserve.xis.v1.Xis`, with an
//! embedded index and a Redis Cluster backend.
