//! # xeno-tests: end-to-end tests of the XenoServer Open Platform
//!
//! Tests that run the real daemons (XenoCorp, XenoServer, task managers, XIS, resource
//! discovery) together over mutual TLS on loopback, as a client would use them.
