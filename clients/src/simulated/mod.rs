//! XenoServers that do not run: a key pair and signed advertisements ([`SimulatedServer`]), and
//! whole generated populations of them ([`population`]), for tests, benchmarks and `xeno dev`.

pub mod population;
mod server;

pub use server::SimulatedServer;
