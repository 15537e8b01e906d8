//! In-process nf_tables client (work in progress).
