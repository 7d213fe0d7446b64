//! Fuzz target: stored credential envelopes and the key ring (`Keyring::decrypt`,
//! `Keyring::key_id_of`, `Credentials::open`, `Keyring::parse`) on arbitrary bytes. A row's
//! `credentials` column and the `encryption_key` variable are the inputs; neither may panic, and
//! sealing then opening must give the plaintext back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::domain::crypto::{CryptoError, Keyring};
use shared::base::settings::Secret;
use uuid::Uuid;

/// Two keys with ids of different lengths, so envelopes naming either (or neither) parse.
const RING: &str = "k2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=,\
                    key-one_1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

fuzz_target!(|data: &[u8]| {
    let ring = Keyring::parse(&Secret::new(RING)).expect("the fixed ring parses");
    let org = Uuid::from_u128(1);
    let service = Uuid::from_u128(2);

    let _ = Keyring::key_id_of(data);
    let _ = ring.decrypt(data, b"");
    let _ = ring.decrypt(data, &shared::domain::crypto::service_aad(org, service));
    let _ = shared::domain::crypto::Credentials::open(&ring, org, service, data).map(|c| c.summary());

    // The same bytes as the `encryption_key` variable.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(r) = Keyring::parse(&Secret::new(text)) {
            let _ = format!("{r:?}");
            let sealed = r.encrypt(b"secret", b"aad").expect("encrypt");
            assert_eq!(Keyring::key_id_of(&sealed).ok(), Some(r.current_id()));
            assert_eq!(r.decrypt(&sealed, b"aad").as_deref(), Ok(&b"secret"[..]));
        }
    }

    // Sealing the bytes round-trips, and any change to the envelope is refused.
    let sealed = ring.encrypt(data, b"aad").expect("encrypt");
    assert_eq!(ring.decrypt(&sealed, b"aad").as_deref(), Ok(data));
    if let Some(&first) = data.first() {
        let mut tampered = sealed.clone();
        let at = usize::from(first) % tampered.len();
        tampered[at] ^= 0x80;
        assert!(
            matches!(
                ring.decrypt(&tampered, b"aad"),
                Err(CryptoError::Malformed | CryptoError::UnknownKey(_) | CryptoError::Decrypt)
            ),
            "a tampered envelope opened"
        );
    }
});
