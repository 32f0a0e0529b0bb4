//! The plugin interface of the Wasm task manager, fed arbitrary requests (decoded from
//! arbitrary bytes, or built from them field by field, with arbitrary programs): every answer
//! is one the interface documents, and the manager keeps answering. The same cases run
//! unbounded under cargo-fuzz (`tests/fuzz`, target `wasm_rpc`).

mod support;

/// Cases in the ordinary test run.
const CASES: u32 = 300;

#[test]
fn arbitrary_requests_get_documented_answers() {
    let manager = support::manager();
    xeno_tests::fuzz::task_manager_properties(std::sync::Arc::new(manager), "Wasm", CASES);
}
