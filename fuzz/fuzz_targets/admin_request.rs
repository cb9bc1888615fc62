//! The admin endpoint's request parser (bus-cli `admin::parse_request`):
//! any bytes give a request, a refusal or "read more", never a panic; the
//! verdict agrees with a plain reading of the request line, and a complete
//! head never turns incomplete when more bytes follow.
#![no_main]

use bus_cli::admin::{MAX_REQUEST_HEAD_BYTES, RequestHead, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let verdict = parse_request(data);
    let end = data.windows(4).position(|w| w == b"\r\n\r\n");
    match &verdict {
        RequestHead::Incomplete => {
            assert!(end.is_none() && data.len() < MAX_REQUEST_HEAD_BYTES);
        }
        RequestHead::Request(request) => {
            let head = std::str::from_utf8(&data[..end.unwrap()]).unwrap();
            let line = head.lines().next().unwrap();
            let mut parts = line.split(' ');
            let method = parts.next().unwrap();
            assert!(method == "GET" || method == "HEAD");
            assert_eq!(request.head_only, method == "HEAD");
            let target = parts.next().unwrap();
            assert!(target.starts_with(request.path.as_str()));
            assert!(!request.path.contains('?'));
            assert!(parts.next().unwrap().starts_with("HTTP/1."));
        }
        RequestHead::Refused(refusal) => {
            assert!(matches!(refusal.status, 400 | 405 | 431 | 505));
            assert!(refusal.body.ends_with('\n'));
        }
    }
    // Bytes after a complete head do not change the verdict.
    if end.is_some() {
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"tail\r\n\r\n");
        assert_eq!(parse_request(&longer), verdict);
    }
});
