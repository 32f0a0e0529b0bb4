//! # xeno-rd: resource discovery
//!
//! Section IV of the paper: match-making over the XIS. This crate will hold the `xeno-rd` daemon
//! serving `xenoserve.rd.v1.ResourceDiscovery` (cheapest under a budget, nearest, equidistant and
//! disjoint-path objectives, latency estimated from Vivaldi network coordinates).
