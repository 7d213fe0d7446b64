//! Fuzz target: request input at the API edge (`api::input`): JSON bodies with their content
//! type, query strings, page limits, cursors and id lists. Input: the first line is the
//! `Content-Type`, the second the query string, the rest the body.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shared::api::input::{
    JSON_BODY_LIMIT, MAX_BULK_IDS, decode_cursor, encode_cursor, json_body, page_limit, query,
    uuid_list,
};

fn lines(data: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let mut it = data.splitn(3, |&b| b == b'\n');
    let a = it.next().unwrap_or_default();
    let b = it.next().unwrap_or_default();
    let c = it.next().unwrap_or_default();
    (a, b, c)
}

fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(m) => m.values().any(has_float),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let (content_type, query_string, body) = lines(data);
    let mut builder = http::Request::builder().method("POST");
    if let Ok(uri) = http::Uri::try_from([b"/api/v1/x?".as_slice(), query_string].concat()) {
        builder = builder.uri(uri);
    }
    if !content_type.is_empty() {
        builder = builder.header(http::header::CONTENT_TYPE, content_type);
    }
    let Ok(req) = builder.body(Bytes::copy_from_slice(body)) else {
        return;
    };

    for limit in [JSON_BODY_LIMIT, 16] {
        if let Ok(v) = json_body(&req, limit) {
            let _ = uuid_list(&v, "ids", MAX_BULK_IDS);
            let cursor = encode_cursor(&v);
            let q = [("cursor".to_owned(), cursor)].into_iter().collect();
            let back = decode_cursor(&q).expect("a cursor we made decodes");
            // serde_json's default float parsing is not exact; cursors carry ids and times.
            if !has_float(&v) {
                assert_eq!(back, Some(v), "cursor round trip");
            }
        }
    }
    let q = query(&req);
    let _ = page_limit(&q);
    let _ = decode_cursor(&q);
});
