//! # xeno-corp: XenoCorp, the platform's trusted third party
//!
//! In the paper's architecture (sections II-A.1, II-A.3, II-B.1) a XenoCorp registers clients and
//! XenoServers and issues their credentials, issues purchase orders against ring-fenced funds,
//! validates each order once for the server that will be paid from it, takes charges annotated
//! with usage records (the audit trail), and settles. Several competing corps may exist.
//!
//! This crate will hold the `xenocorp` daemon serving the `xenoserve.corp.v1.XenoCorp` service of
//! `xeno-schemas` over mutual TLS, its double-entry ledger (SQLite embedded, PostgreSQL for
//! scale-out) and its web registration form.
