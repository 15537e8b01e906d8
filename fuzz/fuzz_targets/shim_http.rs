//! cnm-shim's HTTP/1.1 request reader (`cnm_shim::http::read_request`) over a byte stream of
//! keep-alive requests, each body then decoded by the endpoint its path names.
//!
//! Kept small on purpose: the head parser is the part expected to change; re-point
//! `read_one` at the new entry point and keep the invariants.
//! Invariants: a request has a method and a query-free path, lower-cased header names and a
//! body no longer than the limit and equal to its Content-Length; a refused request carries
//! one of the statuses the server answers with.
#![no_main]

use std::io::BufRead;

use cnm_shim::http::{read_request, ReadError, Request};
use libfuzzer_sys::fuzz_target;

fn read_one<R: BufRead>(r: &mut R) -> Result<Option<Request>, ReadError> {
    read_request(r)
}

fuzz_target!(|data: &[u8]| {
    let mut stream = data;
    for _ in 0..16 {
        let before = stream.len();
        match read_one(&mut stream) {
            Ok(None) => break,
            Ok(Some(req)) => {
                assert!(!req.method.is_empty() && !req.path.contains('?'), "{req:?}");
                for (k, _) in &req.headers {
                    assert_eq!(*k, k.to_ascii_lowercase(), "header name not lower-cased");
                    assert_eq!(k.trim(), k, "header name not trimmed");
                }
                assert!(req.body.len() <= 16 * 1024 * 1024);
                let chunked = req
                    .header("transfer-encoding")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
                if let (false, Some(len)) = (chunked, req.header("content-length")) {
                    assert_eq!(len.parse::<usize>().ok(), Some(req.body.len()));
                }
                cni_fuzz::shim::body(req.path.trim_start_matches('/'), &req.body);
                assert!(stream.len() < before, "a request consumed nothing");
            }
            Err(ReadError::Bad { status, msg }) => {
                assert!(matches!(status, 400 | 413 | 431 | 505), "status {status}");
                assert!(!msg.is_empty());
                break;
            }
            Err(ReadError::Io(_)) => break,
        }
    }
});
