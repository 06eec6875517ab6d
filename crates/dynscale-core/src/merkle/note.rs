//! C2SP signed notes with Ed25519 keys: the envelope a checkpoint travels in, and the key
//! text formats (`<name>+<key id>+<base64 key>`) shared with the Go `sumdb/note` tooling.
//!
//! A signed note is a text ending in a newline, a blank line, then one or more lines
//! `— <key name> <base64(4-byte key id ‖ signature)>`. Verifiers ignore signatures from keys
//! they do not know, reject the note if a known key's signature fails, and require at least
//! one known signature. Keys are built from a 32-byte seed the caller draws from its own
//! randomness: this crate has none.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer as _;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The signed-note signature type byte of Ed25519.
const ALGORITHM_ED25519: u8 = 0x01;

/// The start of every signature line: EM DASH (U+2014) and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// The most signature lines accepted on one note; the spec asks for at least 16.
pub const MAX_SIGNATURES: usize = 100;

/// The prefix of a private key in the Go `sumdb/note` text format.
const PRIVATE_KEY_PREFIX: &str = "PRIVATE+KEY+";

/// Why a key or key text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Key names are non-empty and contain no spaces, `+` or control characters.
    #[error("key name {name:?} is empty or contains a space, '+' or a control character")]
    Name {
        /// The refused name.
        name: String,
    },
    /// The key text does not have the `<name>+<key id>+<key>` parts.
    #[error("key text must be <name>+<key id hex>+<base64 key>, found {parts} part(s)")]
    Parts {
        /// How many `+`-separated parts were found.
        parts: usize,
    },
    /// The key id is not eight hex digits.
    #[error("key id {text:?} is not eight hex digits")]
    KeyIdHex {
        /// The key id text.
        text: String,
    },
    /// The key material is not base64.
    #[error("key material is not base64")]
    Base64,
    /// The key is not an Ed25519 key.
    #[error("key type byte is {found:#04x}, Ed25519 is 0x01")]
    Algorithm {
        /// The type byte found (0 when the key is empty).
        found: u8,
    },
    /// The key material has the wrong length.
    #[error("Ed25519 key material is 32 bytes, found {found}")]
    Length {
        /// Bytes found after the type byte.
        found: usize,
    },
    /// The key id in the text does not match the key.
    #[error("key id {stated:08x} in the text, the key's id is {computed:08x}")]
    KeyIdMismatch {
        /// The id written in the text.
        stated: u32,
        /// The id computed from the name and key.
        computed: u32,
    },
    /// The public key is not a valid, non-weak Ed25519 point.
    #[error("the public key is not a usable Ed25519 point")]
    PublicKey,
    /// A private key text lacks the `PRIVATE+KEY+` prefix.
    #[error("a private key text starts with PRIVATE+KEY+")]
    NotPrivate,
}

/// Why a note could not be signed or opened; line numbers count from 1 over the whole note.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The note is not UTF-8.
    #[error("the note is not UTF-8 (valid up to byte {valid_up_to})")]
    NotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// A control character other than newline.
    #[error("line {line}: control character {character:?} is not allowed in a note")]
    ControlCharacter {
        /// The line holding it.
        line: usize,
        /// The character.
        character: char,
    },
    /// The text, or the note, does not end with a newline.
    #[error("the note text must end with a newline")]
    MissingFinalNewline,
    /// No blank line separates text and signatures.
    #[error("the note has no blank line followed by signature lines")]
    NoSignatures,
    /// A signature line is malformed.
    #[error("line {line}: not a signature line `— <key name> <base64 signature>`")]
    SignatureLine {
        /// The malformed line.
        line: usize,
    },
    /// More signature lines than [`MAX_SIGNATURES`].
    #[error("the note has {found} signature lines, at most {MAX_SIGNATURES} are accepted")]
    TooManySignatures {
        /// Signature lines found.
        found: usize,
    },
    /// A signature by the trusted key does not verify.
    #[error("line {line}: the signature by {key_name} does not verify")]
    BadSignature {
        /// The signature line.
        line: usize,
        /// The key's name.
        key_name: String,
    },
    /// No signature line is by the trusted key.
    #[error("no signature by {key_name} (key id {key_id:08x})")]
    NoTrustedSignature {
        /// The trusted key's name.
        key_name: String,
        /// The trusted key's id.
        key_id: u32,
    },
}

/// A signing key: the key name and an Ed25519 private key.
pub struct Signer {
    name: String,
    key_id: u32,
    key: SigningKey,
}

/// A verifying key: the key name and an Ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

fn check_name(name: &str) -> Result<(), KeyError> {
    let bad = name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+');
    if bad {
        return Err(KeyError::Name {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key)[:4], big-endian (signed-note, Ed25519).
fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ALGORITHM_ED25519]);
    hasher.update(public_key);
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Splits `<name>+<hex id>+<base64>` and decodes the 32 key bytes after the type byte.
/// The base64 part may itself contain `+`, so only the first two are separators.
fn parse_key_text(text: &str) -> Result<(String, u32, [u8; 32]), KeyError> {
    let parts: Vec<&str> = text.splitn(3, '+').collect();
    let [name, id_text, material] = parts.as_slice() else {
        return Err(KeyError::Parts { parts: parts.len() });
    };
    check_name(name)?;
    let id_error = || KeyError::KeyIdHex {
        text: id_text.to_string(),
    };
    if id_text.len() != 8 || !id_text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(id_error());
    }
    let stated = u32::from_str_radix(id_text, 16).map_err(|_| id_error())?;
    let bytes = BASE64.decode(material).map_err(|_| KeyError::Base64)?;
    let (&algorithm, key) = bytes
        .split_first()
        .ok_or(KeyError::Algorithm { found: 0 })?;
    if algorithm != ALGORITHM_ED25519 {
        return Err(KeyError::Algorithm { found: algorithm });
    }
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| KeyError::Length { found: key.len() })?;
    Ok((name.to_string(), stated, key))
}

fn encode_key(key: &[u8; 32]) -> String {
    let mut bytes = Vec::with_capacity(33);
    bytes.push(ALGORITHM_ED25519);
    bytes.extend_from_slice(key);
    BASE64.encode(bytes)
}

impl Signer {
    /// A signer named `name` whose Ed25519 private key is derived from `seed` (RFC 8032).
    /// The caller draws the seed from a secure random source and keeps it secret.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, KeyError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        let key_id = key_id(name, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.to_string(),
            key_id,
            key,
        })
    }

    /// Parses a private key in the Go `sumdb/note` format
    /// `PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 ‖ seed)>`.
    pub fn from_skey(text: &str) -> Result<Self, KeyError> {
        let rest = text
            .strip_prefix(PRIVATE_KEY_PREFIX)
            .ok_or(KeyError::NotPrivate)?;
        let (name, stated, seed) = parse_key_text(rest)?;
        let signer = Self::from_seed(&name, seed)?;
        if signer.key_id != stated {
            return Err(KeyError::KeyIdMismatch {
                stated,
                computed: signer.key_id,
            });
        }
        Ok(signer)
    }

    /// The private key in the Go `sumdb/note` text format; a secret, to be stored with
    /// owner-only permissions.
    pub fn to_skey(&self) -> String {
        format!(
            "{PRIVATE_KEY_PREFIX}{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_key(self.key.as_bytes())
        )
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signed-note key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier, to publish.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }
}

// Debug must never print the private key.
impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signed-note key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        // Strict verification also refuses small-order points and non-canonical encodings,
        // so a signature cannot be malleated into a second valid one.
        self.key.verify_strict(message, &signature).is_ok()
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({self})")
    }
}

/// The verifier key text `<name>+<key id hex>+<base64(0x01 ‖ public key)>`.
impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_key(self.key.as_bytes())
        )
    }
}

impl FromStr for Verifier {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        let (name, stated, public_key) = parse_key_text(text)?;
        let key = VerifyingKey::from_bytes(&public_key).map_err(|_| KeyError::PublicKey)?;
        if key.is_weak() {
            return Err(KeyError::PublicKey);
        }
        let computed = key_id(&name, &public_key);
        if computed != stated {
            return Err(KeyError::KeyIdMismatch { stated, computed });
        }
        Ok(Self {
            name,
            key_id: computed,
            key,
        })
    }
}

/// Refuses control characters other than newline, naming the line.
fn check_characters(text: &str, first_line: usize) -> Result<(), NoteError> {
    let mut line = first_line;
    for character in text.chars() {
        if character == '\n' {
            line += 1;
        } else if character < ' ' {
            return Err(NoteError::ControlCharacter { line, character });
        }
    }
    Ok(())
}

/// Signs `text` (which must end in a newline and hold no other control characters) and
/// returns the signed note: the text, a blank line and one signature line.
pub fn sign_note(text: &str, signer: &Signer) -> Result<String, NoteError> {
    check_characters(text, 1)?;
    if !text.ends_with('\n') {
        return Err(NoteError::MissingFinalNewline);
    }
    let signature = signer.key.sign(text.as_bytes());
    let mut blob = Vec::with_capacity(4 + 64);
    blob.extend_from_slice(&signer.key_id.to_be_bytes());
    blob.extend_from_slice(&signature.to_bytes());
    Ok(format!(
        "{text}\n{SIGNATURE_PREFIX}{} {}\n",
        signer.name,
        BASE64.encode(blob)
    ))
}

/// Opens a signed note: checks its form and that it carries a valid signature by
/// `verifier`, and returns the note text (ending in a newline). Signatures by other keys
/// are ignored, as the signed-note spec requires.
pub fn open_note<'a>(note: &'a [u8], verifier: &Verifier) -> Result<&'a str, NoteError> {
    let note = std::str::from_utf8(note).map_err(|error| NoteError::NotUtf8 {
        valid_up_to: error.valid_up_to(),
    })?;
    check_characters(note, 1)?;
    if !note.ends_with('\n') {
        return Err(NoteError::MissingFinalNewline);
    }
    // The text ends at the last blank line; everything after it is signature lines.
    let split = note.rfind("\n\n").ok_or(NoteError::NoSignatures)?;
    let (text, signatures) = (&note[..=split], &note[split + 2..]);
    if signatures.is_empty() {
        return Err(NoteError::NoSignatures);
    }
    let first_signature_line = text.matches('\n').count() + 2;
    let lines: Vec<&str> = signatures
        .strip_suffix('\n')
        .unwrap_or(signatures)
        .split('\n')
        .collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(NoteError::TooManySignatures { found: lines.len() });
    }
    let mut verified = false;
    for (offset, line_text) in lines.iter().enumerate() {
        let line = first_signature_line + offset;
        let malformed = || NoteError::SignatureLine { line };
        let rest = line_text
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or_else(malformed)?;
        let (name, encoded) = rest.split_once(' ').ok_or_else(malformed)?;
        if check_name(name).is_err() {
            return Err(malformed());
        }
        let blob = BASE64.decode(encoded).map_err(|_| malformed())?;
        if blob.len() < 5 {
            return Err(malformed());
        }
        let (id_bytes, signature) = blob.split_at(4);
        let id = u32::from_be_bytes([id_bytes[0], id_bytes[1], id_bytes[2], id_bytes[3]]);
        // A signature is the trusted key's only if both name and id match.
        if name != verifier.name || id != verifier.key_id {
            continue;
        }
        if !verifier.verify(text.as_bytes(), signature) {
            return Err(NoteError::BadSignature {
                line,
                key_name: verifier.name.clone(),
            });
        }
        verified = true;
    }
    if !verified {
        return Err(NoteError::NoTrustedSignature {
            key_name: verifier.name.clone(),
            key_id: verifier.key_id,
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example key and note of Go's golang.org/x/mod/sumdb/note documentation: an
    // independent implementation, so matching it byte for byte checks the key id, the key
    // text formats and the signature line against the ecosystem.
    const GO_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n\
                           \n\
                           \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn reproduces_go_sumdb_note_example() {
        let signer = Signer::from_skey(GO_SKEY).expect("the Go example key parses");
        assert_eq!(signer.key_id(), 0xc74f20a3);
        assert_eq!(signer.to_skey(), GO_SKEY);
        assert_eq!(signer.verifier().to_string(), GO_VKEY);
        assert_eq!(sign_note(GO_TEXT, &signer).as_deref(), Ok(GO_NOTE));
        let verifier: Verifier = GO_VKEY.parse().expect("the Go example vkey parses");
        assert_eq!(verifier, signer.verifier());
        assert_eq!(open_note(GO_NOTE.as_bytes(), &verifier), Ok(GO_TEXT));
    }

    #[test]
    fn refuses_bad_key_texts() {
        assert_eq!(
            "PeterNeumann+c74f20a3".parse::<Verifier>(),
            Err(KeyError::Parts { parts: 2 })
        );
        assert_eq!(
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
                .parse::<Verifier>(),
            Err(KeyError::KeyIdMismatch {
                stated: 0xc74f20a4,
                computed: 0xc74f20a3
            })
        );
        assert_eq!(
            "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW".parse::<Verifier>(),
            Err(KeyError::KeyIdHex {
                text: "c74f20a".to_string()
            })
        );
        assert_eq!(
            "PeterNeumann+c74f20a3+Ahpc".parse::<Verifier>(),
            Err(KeyError::Algorithm { found: 2 })
        );
        assert_eq!(
            "Peter Neumann+c74f20a3+ARpc".parse::<Verifier>(),
            Err(KeyError::Name {
                name: "Peter Neumann".to_string()
            })
        );
        assert!(Signer::from_seed("", [1; 32]).is_err());
        assert!(Signer::from_seed("a+b", [1; 32]).is_err());
        assert_eq!(Signer::from_skey(GO_VKEY).err(), Some(KeyError::NotPrivate));
    }

    #[test]
    fn signer_debug_hides_the_seed() {
        let signer = Signer::from_seed("example.com/log", [0x42; 32]).expect("valid name");
        let debug = format!("{signer:?}");
        assert!(debug.contains("example.com/log"));
        assert!(!debug.contains("42, 42"));
        assert!(!debug.contains(&encode_key(&[0x42; 32])));
    }

    #[test]
    fn ignores_unknown_signatures_and_requires_a_known_one() {
        let ours = Signer::from_seed("example.com/log", [1; 32]).expect("valid name");
        let theirs = Signer::from_seed("example.com/witness", [2; 32]).expect("valid name");
        let text = "hello\n";
        let signed = sign_note(text, &ours).expect("text is valid");
        let cosigned_line = sign_note(text, &theirs).expect("text is valid");
        let extra = cosigned_line
            .strip_prefix("hello\n\n")
            .expect("the note starts with its text");
        let both = format!("{signed}{extra}");
        assert_eq!(open_note(both.as_bytes(), &ours.verifier()), Ok(text));
        assert_eq!(open_note(both.as_bytes(), &theirs.verifier()), Ok(text));
        let stranger = Signer::from_seed("example.com/other", [3; 32]).expect("valid name");
        assert!(matches!(
            open_note(both.as_bytes(), &stranger.verifier()),
            Err(NoteError::NoTrustedSignature { .. })
        ));
    }

    #[test]
    fn refuses_malformed_notes() {
        let signer = Signer::from_seed("example.com/log", [1; 32]).expect("valid name");
        let verifier = signer.verifier();
        assert_eq!(
            sign_note("no newline", &signer),
            Err(NoteError::MissingFinalNewline)
        );
        assert_eq!(
            sign_note("a\nb\tc\n", &signer),
            Err(NoteError::ControlCharacter {
                line: 2,
                character: '\t'
            })
        );
        let note = sign_note("a\nb\n", &signer).expect("text is valid");
        assert_eq!(
            open_note(note.trim_end().as_bytes(), &verifier),
            Err(NoteError::MissingFinalNewline)
        );
        assert_eq!(
            open_note(b"a\nb\n", &verifier),
            Err(NoteError::NoSignatures)
        );
        let dashless = note.replace('\u{2014}', "-");
        assert_eq!(
            open_note(dashless.as_bytes(), &verifier),
            Err(NoteError::SignatureLine { line: 4 })
        );
        assert_eq!(
            open_note(&[b'a', 0xff, b'\n'], &verifier),
            Err(NoteError::NotUtf8 { valid_up_to: 1 })
        );
        let tampered = note.replacen("a\n", "A\n", 1);
        assert_eq!(
            open_note(tampered.as_bytes(), &verifier),
            Err(NoteError::BadSignature {
                line: 4,
                key_name: "example.com/log".to_string()
            })
        );
    }
}
