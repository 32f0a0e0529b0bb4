//! # xeno-taskmgr-wasm: the WebAssembly task manager
//!
//! A task manager (paper, section V-B) for `EnvType` `Wasm`: runs WASI modules and components
//! under Wasmtime with fuel and CPU-time metering, a CPU rate per session, memory limits and a
//! per-session scratch directory, behind the task manager plugin interface.
