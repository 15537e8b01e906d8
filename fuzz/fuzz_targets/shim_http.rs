//! cnm-shim's HTTP/1.1 request reader (`cnm_shim::http::Input::read_request`, httparse for the
//! head) over a byte stream of keep-alive requests, each body then decoded by the endpoint its
//! path names.
//! Invariants: a request has a method and a query-free path, lower-cased header names and a
//! body no longer than the limit and equal to its Content-Length; a refused request carries
//! one of the statuses the server answers with.
#![no_main]

use std::io::Cursor;
use std::time::Duration;

use cnm_shim::http::{Input, ReadError, MAX_BODY_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(Cursor::new(data.to_vec()));
    let wait = Duration::from_secs(1);
    for _ in 0..16 {
        match input.read_request(wait, wait, || {}) {
            Ok(None) => break,
            Ok(Some(req)) => {
                assert!(!req.method.is_empty() && !req.path.contains('?'), "{req:?}");
                for (k, _) in &req.headers {
                    assert_eq!(*k, k.to_ascii_lowercase(), "header name not lower-cased");
                    assert_eq!(k.trim(), k, "header name not trimmed");
                }
                assert!(req.body.len() <= MAX_BODY_BYTES);
                let chunked = req
                    .header("transfer-encoding")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
                if let (false, Some(len)) = (chunked, req.header("content-length")) {
                    assert_eq!(len.parse::<usize>().ok(), Some(req.body.len()));
                }
                cni_fuzz::shim::body(req.path.trim_start_matches('/'), &req.body);
            }
            Err(ReadError::Bad { status, msg }) => {
                assert!(
                    matches!(status, 400 | 408 | 411 | 413 | 431 | 505),
                    "status {status}"
                );
                assert!(!msg.is_empty());
                break;
            }
            Err(ReadError::Io(_) | ReadError::Idle) => break,
        }
    }
});
