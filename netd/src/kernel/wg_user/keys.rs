//! WireGuard keys: Curve25519 private keys made and clamped like `wg genkey`, their
//! public halves, and wg's text format (standard base64 of the 32 bytes).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use boringtun::x25519::{PublicKey, StaticSecret};
use rand::RngCore;

/// A new random private key, clamped as `wg genkey` does.
pub fn generate_private_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    rand::rng().fill_bytes(&mut k);
    k[0] &= 248;
    k[31] = (k[31] & 127) | 64;
    k
}

/// The public key of `private` (`wg pubkey`).
pub fn public_key_of(private: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*private)).to_bytes()
}

/// A key in wg's text format.
pub fn key_to_base64(key: &[u8; 32]) -> String {
    STANDARD.encode(key)
}

/// Parses a key in wg's text format; `None` unless it is base64 of exactly 32 bytes.
pub fn key_from_base64(text: &str) -> Option<[u8; 32]> {
    STANDARD.decode(text.trim()).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_rejects_bad_lengths() {
        let k = generate_private_key();
        assert_eq!(key_from_base64(&key_to_base64(&k)), Some(k));
        assert_eq!(key_from_base64("AAAA"), None);
        assert_eq!(key_from_base64("not base64!"), None);
    }

    #[test]
    fn public_key_matches_wg() {
        // The example pair of wg(8): `echo yAnz…= | wg pubkey`.
        let private = key_from_base64("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=").unwrap();
        let expected = key_from_base64("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=").unwrap();
        assert_eq!(public_key_of(&private), expected);
    }
}
