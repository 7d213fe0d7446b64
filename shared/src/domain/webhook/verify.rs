//! Authentication of a delivery on its raw bytes, before anything parses the body: `token`,
//! `hmac` and Standard Webhooks (`standard`). Pure: headers, body, secrets and `now` go in, a
//! verdict comes out. Every comparison of secret material is constant-time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::domain::crypto::secrets_equal;
use crate::domain::service::{WebhookAuth, WebhookConfig};

type HmacSha256 = Hmac<Sha256>;

/// Allowed distance between a signed timestamp and our clock, both ways (Standard Webhooks and
/// Stripe use 5 minutes).
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// `hmac` scheme headers.
pub const HMAC_SIGNATURE_HEADER: &str = "x-golioth-signature";
pub const HMAC_TIMESTAMP_HEADER: &str = "x-golioth-timestamp";
/// Standard Webhooks headers.
pub const STANDARD_ID_HEADER: &str = "webhook-id";
pub const STANDARD_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const STANDARD_SIGNATURE_HEADER: &str = "webhook-signature";

/// Longest `webhook-id` accepted (it becomes the delivery key).
pub const MAX_ID_LEN: usize = 200;

/// Why a delivery failed authentication. The client always gets the same 401; the reason goes
/// to the `rejected` delivery record and the log, for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the service has no webhook secret configured")]
    NoSecret,
    #[error("a configured webhook secret is not a valid whsec_<base64> secret")]
    BadSecret,
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("timestamp outside the allowed ±{TIMESTAMP_TOLERANCE_SECS} s window")]
    Timestamp,
    #[error("token or signature does not match")]
    Mismatch,
}

/// Authenticate a delivery per the service's webhook config. `secrets` are the current and, during
/// rotation, the previous webhook secret; any one matching is enough. `now` is Unix seconds.
pub fn authenticate(
    cfg: &WebhookConfig,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[&str],
    now: i64,
) -> Result<(), AuthError> {
    if secrets.is_empty() {
        return Err(AuthError::NoSecret);
    }
    match cfg.auth {
        WebhookAuth::Token => verify_token(&cfg.header_name, headers, secrets),
        WebhookAuth::Hmac => verify_hmac(headers, body, secrets, cfg.require_timestamp, now),
        WebhookAuth::Standard => verify_standard(headers, body, secrets, now),
    }
}

/// A single header as text; several headers of one name are refused (ambiguous).
fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, AuthError> {
    let mut all = headers.get_all(name).iter();
    let Some(first) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(AuthError::Malformed(name));
    }
    first
        .to_str()
        .map(|s| Some(s.trim()))
        .map_err(|_| AuthError::Malformed(name))
}

fn required<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, AuthError> {
    header(headers, name)?
        .filter(|v| !v.is_empty())
        .ok_or(AuthError::Missing(name))
}

/// Compare against every secret without stopping at the first match, so the time taken does not
/// say which secret matched.
fn any_secret(secrets: &[&str], mut matches: impl FnMut(&str) -> bool) -> bool {
    secrets.iter().fold(false, |found, s| matches(s) | found)
}

/// `token`: the configured header equals a secret. With `authorization` the value is
/// `Bearer <secret>` (scheme case-insensitive).
fn verify_token(header_name: &str, headers: &HeaderMap, secrets: &[&str]) -> Result<(), AuthError> {
    let name = header_name.to_ascii_lowercase();
    let value = match headers.get(name.as_str()) {
        None => return Err(AuthError::Missing("token")),
        Some(v) => v
            .to_str()
            .map_err(|_| AuthError::Malformed("token"))?
            .trim(),
    };
    let token = if name == "authorization" {
        match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => return Err(AuthError::Malformed("authorization")),
        }
    } else {
        value
    };
    if token.is_empty() {
        return Err(AuthError::Missing("token"));
    }
    if any_secret(secrets, |s| secrets_equal(token.as_bytes(), s.as_bytes())) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

fn parse_timestamp(raw: &str, name: &'static str) -> Result<i64, AuthError> {
    if raw.is_empty() || raw.len() > 12 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::Malformed(name));
    }
    raw.parse::<i64>().map_err(|_| AuthError::Malformed(name))
}

fn check_window(ts: i64, now: i64) -> Result<(), AuthError> {
    if (now - ts).abs() > TIMESTAMP_TOLERANCE_SECS {
        Err(AuthError::Timestamp)
    } else {
        Ok(())
    }
}

/// HMAC-SHA256 keyed with `key`, fed `parts`. Built from the block-sized key HMAC itself derives
/// (longer keys hashed, shorter ones zero-padded, RFC 2104 §2), which makes it infallible.
fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut m = <HmacSha256 as KeyInit>::new(&block.into());
    for p in parts {
        m.update(p);
    }
    m
}

/// `hmac`: `X-Golioth-Signature: sha256=<hex>` = HMAC-SHA256(secret, body), or over `ts.body`
/// when `X-Golioth-Timestamp` is sent (then ±300 s). The secret's UTF-8 bytes are the key.
fn verify_hmac(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[&str],
    require_timestamp: bool,
    now: i64,
) -> Result<(), AuthError> {
    let sig = required(headers, HMAC_SIGNATURE_HEADER)?;
    let hex_sig = sig
        .strip_prefix("sha256=")
        .ok_or(AuthError::Malformed(HMAC_SIGNATURE_HEADER))?;
    let expected = hex::decode(hex_sig).map_err(|_| AuthError::Malformed(HMAC_SIGNATURE_HEADER))?;
    let ts = match header(headers, HMAC_TIMESTAMP_HEADER)?.filter(|v| !v.is_empty()) {
        Some(raw) => {
            let ts = parse_timestamp(raw, HMAC_TIMESTAMP_HEADER)?;
            check_window(ts, now)?;
            Some(raw)
        }
        None if require_timestamp => return Err(AuthError::Missing(HMAC_TIMESTAMP_HEADER)),
        None => None,
    };
    let ok = any_secret(secrets, |s| {
        let m = match ts {
            Some(t) => mac(s.as_bytes(), &[t.as_bytes(), b".", body]),
            None => mac(s.as_bytes(), &[body]),
        };
        m.verify_slice(&expected).is_ok()
    });
    if ok { Ok(()) } else { Err(AuthError::Mismatch) }
}

/// The key bytes of a Standard Webhooks secret: `whsec_` + base64 (the prefix is optional, as in
/// the reference libraries).
pub fn standard_key(secret: &str) -> Result<Vec<u8>, AuthError> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    match B64.decode(b64) {
        Ok(k) if !k.is_empty() => Ok(k),
        _ => Err(AuthError::BadSecret),
    }
}

/// `standard`: Standard Webhooks v1 — HMAC-SHA256 over `id.timestamp.body`, base64, in a
/// space-separated list of `v1,<sig>` entries (several during the sender's key rotation).
fn verify_standard(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[&str],
    now: i64,
) -> Result<(), AuthError> {
    let id = required(headers, STANDARD_ID_HEADER)?;
    if id.len() > MAX_ID_LEN || id.contains('.') {
        return Err(AuthError::Malformed(STANDARD_ID_HEADER));
    }
    let raw_ts = required(headers, STANDARD_TIMESTAMP_HEADER)?;
    let ts = parse_timestamp(raw_ts, STANDARD_TIMESTAMP_HEADER)?;
    let sig_header = required(headers, STANDARD_SIGNATURE_HEADER)?;
    check_window(ts, now)?;
    let candidates: Vec<Vec<u8>> = sig_header
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| B64.decode(b64).ok())
        .collect();
    if candidates.is_empty() {
        return Err(AuthError::Malformed(STANDARD_SIGNATURE_HEADER));
    }
    let keys = secrets
        .iter()
        .map(|s| standard_key(s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ok = false;
    for key in &keys {
        let m = mac(key, &[id.as_bytes(), b".", raw_ts.as_bytes(), b".", body]);
        let digest = m.finalize().into_bytes();
        for c in &candidates {
            ok |= secrets_equal(c, &digest);
        }
    }
    if ok { Ok(()) } else { Err(AuthError::Mismatch) }
}

/// `sha256=<hex>` for the `hmac` scheme: over the body, or `ts.body` with a timestamp. For relays,
/// tests and benchmarks.
pub fn hmac_signature(secret: &str, timestamp: Option<i64>, body: &[u8]) -> String {
    let m = match timestamp {
        Some(t) => mac(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body]),
        None => mac(secret.as_bytes(), &[body]),
    };
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// `v1,<base64>` for Standard Webhooks. For relays, tests and benchmarks.
pub fn standard_signature(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, AuthError> {
    let key = standard_key(secret)?;
    let m = mac(
        &key,
        &[
            id.as_bytes(),
            b".",
            timestamp.to_string().as_bytes(),
            b".",
            body,
        ],
    );
    Ok(format!("v1,{}", B64.encode(m.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn cfg(auth: WebhookAuth) -> WebhookConfig {
        WebhookConfig {
            auth,
            ..WebhookConfig::default()
        }
    }

    // The Standard Webhooks specification's published test vector.
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TS: i64 = 1_614_265_330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn sw_headers(sig: &str, ts: i64) -> HeaderMap {
        headers(&[
            ("webhook-id", SW_ID),
            ("webhook-timestamp", &ts.to_string()),
            ("webhook-signature", sig),
        ])
    }

    #[test]
    fn standard_webhooks_test_vector() {
        assert_eq!(
            standard_signature(SW_SECRET, SW_ID, SW_TS, SW_BODY).unwrap(),
            SW_SIG
        );
        let c = cfg(WebhookAuth::Standard);
        assert_eq!(
            authenticate(
                &c,
                &sw_headers(SW_SIG, SW_TS),
                SW_BODY,
                &[SW_SECRET],
                SW_TS + 10
            ),
            Ok(())
        );
        // Without the prefix, as the reference libraries also accept.
        assert_eq!(
            authenticate(
                &c,
                &sw_headers(SW_SIG, SW_TS),
                SW_BODY,
                &["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
                SW_TS
            ),
            Ok(())
        );
    }

    #[test]
    fn standard_webhooks_rejections() {
        let c = cfg(WebhookAuth::Standard);
        let h = sw_headers(SW_SIG, SW_TS);
        let other = "whsec_c2VjcmV0LW9mLWEtcm90YXRlZC1lbmRwb2ludA==";
        // Wrong secret; the previous one still matching is enough (rotation).
        assert_eq!(
            authenticate(&c, &h, SW_BODY, &[other], SW_TS),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            authenticate(&c, &h, SW_BODY, &[other, SW_SECRET], SW_TS),
            Ok(())
        );
        // Re-serialized JSON (no space) breaks the signature.
        assert_eq!(
            authenticate(&c, &h, br#"{"test":2432232314}"#, &[SW_SECRET], SW_TS),
            Err(AuthError::Mismatch)
        );
        // Stale and future timestamps.
        assert_eq!(
            authenticate(&c, &h, SW_BODY, &[SW_SECRET], SW_TS + 301),
            Err(AuthError::Timestamp)
        );
        assert_eq!(
            authenticate(&c, &h, SW_BODY, &[SW_SECRET], SW_TS - 301),
            Err(AuthError::Timestamp)
        );
        // Several signatures: any one matching passes; unknown versions are ignored.
        let multi = format!("v1a,AAAA v1,{} {SW_SIG}", B64.encode([0u8; 32]));
        assert_eq!(
            authenticate(&c, &sw_headers(&multi, SW_TS), SW_BODY, &[SW_SECRET], SW_TS),
            Ok(())
        );
        // Missing headers.
        for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            let mut h2 = h.clone();
            h2.remove(missing);
            assert_eq!(
                authenticate(&c, &h2, SW_BODY, &[SW_SECRET], SW_TS),
                Err(AuthError::Missing(match missing {
                    "webhook-id" => STANDARD_ID_HEADER,
                    "webhook-timestamp" => STANDARD_TIMESTAMP_HEADER,
                    _ => STANDARD_SIGNATURE_HEADER,
                }))
            );
        }
        // A secret that is not base64 is a configuration error, not a match.
        assert_eq!(
            authenticate(&c, &h, SW_BODY, &["whsec_not base64!"], SW_TS),
            Err(AuthError::BadSecret)
        );
        // Ids with dots would make `id.ts.body` ambiguous.
        let dotted = headers(&[
            ("webhook-id", "a.b"),
            ("webhook-timestamp", &SW_TS.to_string()),
            ("webhook-signature", SW_SIG),
        ]);
        assert_eq!(
            authenticate(&c, &dotted, SW_BODY, &[SW_SECRET], SW_TS),
            Err(AuthError::Malformed(STANDARD_ID_HEADER))
        );
    }

    #[test]
    fn block_key_construction_equals_hmac_of_any_key_length() {
        for len in [0usize, 1, 24, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut reference = <HmacSha256 as Mac>::new_from_slice(&key).unwrap();
            reference.update(b"payload");
            assert_eq!(
                mac(&key, &[b"pay", b"load"]).finalize().into_bytes(),
                reference.finalize().into_bytes(),
                "key length {len}"
            );
        }
    }

    #[test]
    fn hmac_matches_githubs_published_vector() {
        // github/docs validating-webhook-deliveries.md
        assert_eq!(
            hmac_signature("It's a Secret to Everybody", None, b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn hmac_scheme() {
        let secret = "relay-secret-0123456789";
        let body = br#"{"temp": 21.5}"#;
        let c = cfg(WebhookAuth::Hmac);
        let now = 1_700_000_000;
        let sig = hmac_signature(secret, None, body);
        let h = headers(&[("x-golioth-signature", &sig)]);
        assert_eq!(authenticate(&c, &h, body, &[secret], now), Ok(()));
        assert_eq!(
            authenticate(&c, &h, br#"{"temp":21.5}"#, &[secret], now),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            authenticate(&c, &h, body, &["another-secret-0000"], now),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            authenticate(&c, &HeaderMap::new(), body, &[secret], now),
            Err(AuthError::Missing(HMAC_SIGNATURE_HEADER))
        );
        // With a timestamp: signed as `ts.body`, ±300 s.
        let sig_ts = hmac_signature(secret, Some(now), body);
        let ht = headers(&[
            ("x-golioth-signature", &sig_ts),
            ("x-golioth-timestamp", &now.to_string()),
        ]);
        assert_eq!(authenticate(&c, &ht, body, &[secret], now + 299), Ok(()));
        assert_eq!(
            authenticate(&c, &ht, body, &[secret], now + 301),
            Err(AuthError::Timestamp)
        );
        assert_eq!(
            authenticate(&c, &ht, body, &[secret], now - 301),
            Err(AuthError::Timestamp)
        );
        // The body-only signature under a timestamp header does not verify.
        let mixed = headers(&[
            ("x-golioth-signature", &sig),
            ("x-golioth-timestamp", &now.to_string()),
        ]);
        assert_eq!(
            authenticate(&c, &mixed, body, &[secret], now),
            Err(AuthError::Mismatch)
        );
        // require_timestamp refuses a body-only signature.
        let strict = WebhookConfig {
            require_timestamp: true,
            ..c.clone()
        };
        assert_eq!(
            authenticate(&strict, &h, body, &[secret], now),
            Err(AuthError::Missing(HMAC_TIMESTAMP_HEADER))
        );
        assert_eq!(authenticate(&strict, &ht, body, &[secret], now), Ok(()));
        assert_eq!(
            authenticate(
                &c,
                &headers(&[("x-golioth-signature", "md5=abc")]),
                body,
                &[secret],
                now
            ),
            Err(AuthError::Malformed(HMAC_SIGNATURE_HEADER))
        );
    }

    #[test]
    fn token_scheme() {
        let c = cfg(WebhookAuth::Token);
        let s = "token-secret-0123456789";
        let ok = headers(&[("x-webhook-token", s)]);
        assert_eq!(authenticate(&c, &ok, b"", &[s], 0), Ok(()));
        assert_eq!(
            authenticate(&c, &ok, b"", &["old-secret-00000000", s], 0),
            Ok(())
        );
        assert_eq!(
            authenticate(&c, &ok, b"", &["something-else-000"], 0),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            authenticate(&c, &HeaderMap::new(), b"", &[s], 0),
            Err(AuthError::Missing("token"))
        );
        assert_eq!(authenticate(&c, &ok, b"", &[], 0), Err(AuthError::NoSecret));
        // Authorization: Bearer.
        let bearer = WebhookConfig {
            header_name: "Authorization".into(),
            ..c.clone()
        };
        let hb = headers(&[("authorization", &format!("Bearer {s}"))]);
        assert_eq!(authenticate(&bearer, &hb, b"", &[s], 0), Ok(()));
        assert_eq!(
            authenticate(&bearer, &headers(&[("authorization", s)]), b"", &[s], 0),
            Err(AuthError::Malformed("authorization"))
        );
        // A prefix of the secret is not the secret.
        assert_eq!(
            authenticate(&c, &headers(&[("x-webhook-token", &s[..10])]), b"", &[s], 0),
            Err(AuthError::Mismatch)
        );
    }
}
