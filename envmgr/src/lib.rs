//! # xeno-envmgr: the XenoServer environment manager
//!
//! The paper's indirection layer (sections II-B.2 and V-B): the `xenoserver` daemon that answers
//! status queries, creates sessions from `EnvironmentalRequirements` and a purchase order,
//! deploys tasks into them, streams their output, meters usage and charges the corp, dispatching
//! each session by `EnvType` to a task manager through the `xenoserve.taskmanager.v1` plugin
//! interface of `xeno-schemas`.
