//! The key ring: credentials are sealed with XChaCha20-Poly1305 before
//! they reach storage, and opened only where a request needs them.
//!
//! The ring comes from `WEIR_SECRET_KEYS` (or `--secret-keys-file`):
//! comma-separated `kid:base64key` pairs of 32-byte keys. The first key
//! seals; every key opens. Each sealed value names its key id and is bound
//! (as AEAD associated data) to its tenant, connection and field, so a
//! ciphertext copied to another row does not open.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};
pub use weir_storage::Sealed;

/// The variable that holds the key ring.
pub const KEYS_VAR: &str = "WEIR_SECRET_KEYS";
/// The length of a key.
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
/// The version of the associated data's layout.
const AAD_PREFIX: &str = "weir.credential.v1";

/// The keys credentials are sealed and opened with. `Debug` shows the key
/// ids only.
pub struct KeyRing {
    keys: Vec<(String, XChaCha20Poly1305)>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

/// What a sealed value is bound to: opening it under another binding fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    pub tenant: &'a str,
    pub connection: &'a str,
    /// Which credential: `api_key`, `password`, `access_token`, …
    pub field: &'a str,
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        // NUL-separated: no part (an id, a field name) holds a NUL.
        [AAD_PREFIX, self.tenant, self.connection, self.field]
            .join("\0")
            .into_bytes()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The key list does not parse; says which entry and why (never the
    /// key itself).
    #[error(
        "{KEYS_VAR}: entry {index}: {why}; write `kid:base64key` pairs of {KEY_BYTES}-byte keys separated by commas (a key: `openssl rand -base64 32`)"
    )]
    BadKeys { index: usize, why: String },
    #[error(
        "no key opens this credential: it was sealed with key id `{0}`; add that key to {KEYS_VAR}"
    )]
    UnknownKey(String),
    #[error(
        "the credential does not open with key `{0}`: the key is not the one it was sealed with, or the stored value was altered or moved"
    )]
    Tampered(String),
    #[error("the stored credential is damaged: {0}")]
    Damaged(&'static str),
    #[error("sealing failed")]
    Seal,
}

impl KeyRing {
    /// Parses `kid:base64key,kid:base64key`. An empty list is an error:
    /// callers that have no keys hold no ring.
    pub fn parse(text: &SecretString) -> Result<Self, VaultError> {
        let mut keys: Vec<(String, XChaCha20Poly1305)> = Vec::new();
        let entries: Vec<&str> = text
            .expose_secret()
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if entries.is_empty() {
            return Err(VaultError::BadKeys {
                index: 0,
                why: "no key is given".into(),
            });
        }
        for (i, entry) in entries.into_iter().enumerate() {
            let index = i + 1;
            let bad = |why: &str| VaultError::BadKeys {
                index,
                why: why.to_owned(),
            };
            let (kid, key) = entry
                .split_once(':')
                .ok_or_else(|| bad("it has no `kid:` before the key"))?;
            let kid = kid.trim();
            if !weir_nodes::reader::valid_id(kid) {
                return Err(bad("the key id must match [a-z0-9_-]{1,64}"));
            }
            if keys.iter().any(|(k, _)| k == kid) {
                return Err(bad("the key id is given twice"));
            }
            let bytes = secrecy::zeroize::Zeroizing::new(
                B64.decode(key.trim())
                    .map_err(|_| bad("the key is not base64"))?,
            );
            if bytes.len() != KEY_BYTES {
                return Err(bad(&format!(
                    "the key is {} bytes, not {KEY_BYTES}",
                    bytes.len()
                )));
            }
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
                .map_err(|_| bad("the key cannot be used"))?;
            keys.push((kid.to_owned(), cipher));
        }
        Ok(Self { keys })
    }

    /// The id of the key that seals.
    pub fn primary(&self) -> &str {
        &self.keys[0].0
    }

    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// Seals `plain` with the first key, bound to `binding`.
    pub fn seal(&self, binding: Binding<'_>, plain: &SecretString) -> Result<Sealed, VaultError> {
        let (kid, cipher) = &self.keys[0];
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let nonce_ref = XNonce::from(nonce);
        let aad = binding.aad();
        let data = cipher
            .encrypt(
                &nonce_ref,
                Payload {
                    msg: plain.expose_secret().as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Seal)?;
        Ok(Sealed {
            kid: kid.clone(),
            nonce: B64.encode(nonce),
            data: B64.encode(data),
        })
    }

    /// Opens a sealed value under `binding`.
    pub fn open(&self, binding: Binding<'_>, sealed: &Sealed) -> Result<SecretString, VaultError> {
        let cipher = self
            .keys
            .iter()
            .find(|(k, _)| *k == sealed.kid)
            .map(|(_, c)| c)
            .ok_or_else(|| VaultError::UnknownKey(sealed.kid.clone()))?;
        let nonce = B64
            .decode(&sealed.nonce)
            .map_err(|_| VaultError::Damaged("its nonce is not base64"))?;
        let nonce: [u8; NONCE_BYTES] = nonce
            .try_into()
            .map_err(|_| VaultError::Damaged("its nonce is not 24 bytes"))?;
        let data = B64
            .decode(&sealed.data)
            .map_err(|_| VaultError::Damaged("its ciphertext is not base64"))?;
        let aad = binding.aad();
        let plain = secrecy::zeroize::Zeroizing::new(
            cipher
                .decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: &data,
                        aad: &aad,
                    },
                )
                .map_err(|_| VaultError::Tampered(sealed.kid.clone()))?,
        );
        let text =
            std::str::from_utf8(&plain).map_err(|_| VaultError::Damaged("it is not text"))?;
        Ok(SecretString::from(text.to_owned()))
    }

    /// Seals again with the first key what another key sealed (`weir
    /// secrets rotate`); `None` if it is sealed with the first key already.
    pub fn reseal(
        &self,
        binding: Binding<'_>,
        sealed: &Sealed,
    ) -> Result<Option<Sealed>, VaultError> {
        if sealed.kid == self.primary() {
            return Ok(None);
        }
        let plain = self.open(binding, sealed)?;
        self.seal(binding, &plain).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        B64.encode([byte; KEY_BYTES])
    }

    fn ring(text: &str) -> KeyRing {
        KeyRing::parse(&SecretString::from(text.to_owned())).expect("a valid ring")
    }

    const HERE: Binding<'static> = Binding {
        tenant: "acme",
        connection: "c1",
        field: "api_key",
    };

    #[test]
    fn what_is_sealed_opens_and_does_not_show_the_plain_text() {
        let r = ring(&format!("k1:{}", key(1)));
        let plain = SecretString::from("sk_live_very_secret");
        let sealed = r.seal(HERE, &plain).expect("sealed");
        assert_eq!(sealed.kid, "k1");
        let stored = serde_json::to_string(&sealed).expect("json");
        assert!(!stored.contains("sk_live"), "{stored}");
        assert_eq!(
            r.open(HERE, &sealed).expect("opens").expose_secret(),
            "sk_live_very_secret"
        );
        // A fresh nonce each time.
        let again = r.seal(HERE, &plain).expect("sealed");
        assert_ne!(again.nonce, sealed.nonce);
        assert_ne!(again.data, sealed.data);
        assert!(!format!("{r:?} {sealed:?}").contains(&key(1)));
    }

    #[test]
    fn a_value_moved_to_another_tenant_connection_or_field_does_not_open() {
        let r = ring(&format!("k1:{}", key(1)));
        let sealed = r.seal(HERE, &SecretString::from("secret")).expect("sealed");
        for other in [
            Binding {
                tenant: "globex",
                ..HERE
            },
            Binding {
                connection: "c2",
                ..HERE
            },
            Binding {
                field: "password",
                ..HERE
            },
        ] {
            assert_eq!(
                r.open(other, &sealed).map(|_| ()),
                Err(VaultError::Tampered("k1".into()))
            );
        }
        let mut altered = sealed.clone();
        altered.data = B64.encode(b"0123456789abcdef0123");
        assert!(matches!(
            r.open(HERE, &altered),
            Err(VaultError::Tampered(_))
        ));
    }

    #[test]
    fn the_first_key_seals_every_key_opens_and_rotation_reseals() {
        let old = ring(&format!("old:{}", key(1)));
        let sealed = old
            .seal(HERE, &SecretString::from("secret"))
            .expect("sealed");
        let both = ring(&format!("new:{}, old:{}", key(2), key(1)));
        assert_eq!(both.primary(), "new");
        assert_eq!(
            both.open(HERE, &sealed).expect("opens").expose_secret(),
            "secret"
        );
        let resealed = both
            .reseal(HERE, &sealed)
            .expect("resealed")
            .expect("changed");
        assert_eq!(resealed.kid, "new");
        assert!(both.reseal(HERE, &resealed).expect("fine").is_none());
        let only_new = ring(&format!("new:{}", key(2)));
        assert_eq!(
            only_new
                .open(HERE, &resealed)
                .expect("opens")
                .expose_secret(),
            "secret"
        );
        assert_eq!(
            only_new.open(HERE, &sealed).map(|_| ()),
            Err(VaultError::UnknownKey("old".into()))
        );
        // A key under the right id, but not the right key.
        let wrong = ring(&format!("old:{}", key(3)));
        assert_eq!(
            wrong.open(HERE, &sealed).map(|_| ()),
            Err(VaultError::Tampered("old".into()))
        );
    }

    #[test]
    fn bad_key_lists_say_which_entry_and_why_without_the_key() {
        for (text, index, why) in [
            ("", 0, "no key"),
            ("k1", 1, "no `kid:`"),
            ("K 1:AAAA", 1, "key id"),
            ("k1:***", 1, "not base64"),
            ("k1:AAAA", 1, "3 bytes, not 32"),
        ] {
            match KeyRing::parse(&SecretString::from(text.to_owned())) {
                Err(VaultError::BadKeys { index: i, why: w }) => {
                    assert_eq!(i, index, "{text}");
                    assert!(w.contains(why), "{text}: {w}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let twice = format!("a:{},a:{}", key(1), key(2));
        let e = KeyRing::parse(&SecretString::from(twice)).expect_err("refused");
        assert!(
            e.to_string().contains("entry 2") && e.to_string().contains("twice"),
            "{e}"
        );
        assert!(!e.to_string().contains(&key(1)));
    }
}
