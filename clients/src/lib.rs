//! # xeno-clients: how anything talks to the platform's services
//!
//! The paper's parties reach each other over the network: XenoServers and clients call the
//! XenoCorp (registration, purchase orders, charges), servers advertise in the XIS, clients
//! and resource discovery systems look servers up in it, and clients ask an RD system for
//! suggestions. Every daemon and the `xeno` client call them the same way, through this crate,
//! so a connection rule (who the peer must be), a size limit or an in-flight bound is written
//! once:
//!
//! - [`transport`]: channels that authenticate the peer by the role and identity its
//!   certificate carries (the corp by its role under its pinned CA; a server by its id);
//! - [`charging`]: the long-lived charge stream to the corp, with its in-flight limit;
//! - [`corp_admin`]: the corp operator's socket;
//! - [`identity`]: the key pair and certificate request made before registering;
//! - [`xis`]: advertise, look up, fetch a verified advertisement; [`xis::advertiser`] keeps a
//!   server's advertisement fresh; [`xis::query`] combines boolean searches;
//! - [`rd`]: FindXenoServers, with every suggested advertisement's signature checked;
//! - [`vivaldi`]: the network coordinate system every server runs and clients use to place
//!   themselves;
//! - [`simulated`]: signed advertisements of servers that do not run, and whole generated
//!   populations of them, for tests, benchmarks and `xeno dev`.
//!
//! The formats themselves (documents, protobuf, signatures) are `xeno-schemas`'; the services
//! are their daemons'.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let channel = xeno_clients::xis::connect("127.0.0.1:7300").await?;
//! let query = xeno_clients::xis::query::Query::parse("EnvType=Wasm CPUmsps=100-150")?;
//! let servers = xeno_clients::xis::query::find(channel, &query, false, 10_000).await?;
//! println!("{} servers", servers.len());
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod charging;
pub mod corp_admin;
pub mod identity;
pub mod rd;
pub mod simulated;
pub mod transport;
pub mod vivaldi;
pub mod xis;
