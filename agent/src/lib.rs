//! The pure parts of cnm-agent that other crates (the fuzz targets) reach: the etcd key
//! layout, the decoding of etcd values, and the log timestamp format. Everything with I/O
//! stays in the binary.

pub mod keys;
pub mod logtime;
pub mod values;
