//! Checkpoints: the log's signed tree head in the C2SP tlog-checkpoint format, an origin
//! line, the tree size, the base64 root hash and optional extension lines, carried in a
//! signed note.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::hash::Hash;
use super::note::{NoteError, Signer, Verifier, open_note, sign_note};

/// A tree head: which log, how many entries, and the root over them.
///
/// Built only through [`Checkpoint::new`] or [`open_checkpoint`], so every value formats to
/// a well-formed note body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

/// Why a checkpoint was refused; body line numbers count from 1 (origin, size, root).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The signed-note envelope is malformed or not signed by the trusted key.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The body has fewer than the three mandatory lines.
    #[error("the checkpoint body has {found} line(s), it needs origin, size and root hash")]
    MissingLines {
        /// Lines found.
        found: usize,
    },
    /// A body line holds a control character (possible only when parsing a bare body; a
    /// signed note refuses them before).
    #[error("line {line}: control characters are not allowed in a checkpoint")]
    ControlCharacter {
        /// The line holding it.
        line: usize,
    },
    /// Line 1 is empty.
    #[error("line 1: the origin is empty")]
    EmptyOrigin,
    /// Line 2 is not a canonical decimal tree size.
    #[error("line 2: tree size {text:?} is not a decimal number without leading zeros")]
    Size {
        /// The line's text.
        text: String,
    },
    /// Line 3 is not the canonical base64 of 32 bytes.
    #[error("line 3: root hash {text:?} is not the base64 of 32 bytes")]
    RootHash {
        /// The line's text.
        text: String,
    },
    /// An extension line is empty.
    #[error("line {line}: extension lines must not be empty")]
    EmptyExtension {
        /// The empty line.
        line: usize,
    },
    /// A field given to [`Checkpoint::new`] is not one non-empty line of printable text.
    #[error("checkpoint {field} {value:?} must be one non-empty line without control characters")]
    Field {
        /// `origin` or `extension`.
        field: &'static str,
        /// The refused value.
        value: String,
    },
}

fn is_single_line(value: &str) -> bool {
    !value.is_empty() && !value.chars().any(|c| c < ' ')
}

impl Checkpoint {
    /// A checkpoint; `origin` and each extension must be one non-empty line without control
    /// characters. The origin should be the log's schema-less URL, e.g. `example.com/log`.
    pub fn new(
        origin: impl Into<String>,
        size: u64,
        root: Hash,
        extensions: Vec<String>,
    ) -> Result<Self, CheckpointError> {
        let origin = origin.into();
        if !is_single_line(&origin) {
            return Err(CheckpointError::Field {
                field: "origin",
                value: origin,
            });
        }
        if let Some(bad) = extensions.iter().find(|line| !is_single_line(line)) {
            return Err(CheckpointError::Field {
                field: "extension",
                value: bad.clone(),
            });
        }
        Ok(Self {
            origin,
            size,
            root,
            extensions,
        })
    }

    /// The log's identity.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of entries in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Root hash of the tree of `size` entries.
    pub fn root(&self) -> Hash {
        self.root
    }

    /// Extension lines, usually none.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The note text: `<origin>\n<size>\n<base64 root>\n` and one line per extension.
    pub fn body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root.as_bytes())
        );
        for extension in &self.extensions {
            body.push_str(extension);
            body.push('\n');
        }
        body
    }

    /// Parses a checkpoint body (the text of an already opened note).
    pub fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let lines: Vec<&str> = body
            .strip_suffix('\n')
            .ok_or(NoteError::MissingFinalNewline)?
            .split('\n')
            .collect();
        let [origin, size_text, root_text, extensions @ ..] = lines.as_slice() else {
            return Err(CheckpointError::MissingLines { found: lines.len() });
        };
        if let Some(index) = lines.iter().position(|line| line.chars().any(|c| c < ' ')) {
            return Err(CheckpointError::ControlCharacter { line: index + 1 });
        }
        if origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        let canonical = !size_text.is_empty()
            && size_text.bytes().all(|b| b.is_ascii_digit())
            && (*size_text == "0" || !size_text.starts_with('0'));
        let size = size_text
            .parse::<u64>()
            .ok()
            .filter(|_| canonical)
            .ok_or_else(|| CheckpointError::Size {
                text: size_text.to_string(),
            })?;
        // The standard engine requires canonical padding and zero trailing bits, so each
        // root has exactly one accepted spelling.
        let root = BASE64
            .decode(root_text)
            .ok()
            .and_then(|bytes| Hash::from_slice(&bytes).ok())
            .ok_or_else(|| CheckpointError::RootHash {
                text: root_text.to_string(),
            })?;
        if let Some(position) = extensions.iter().position(|line| line.is_empty()) {
            return Err(CheckpointError::EmptyExtension { line: position + 4 });
        }
        Ok(Self {
            origin: origin.to_string(),
            size,
            root,
            extensions: extensions.iter().map(|line| line.to_string()).collect(),
        })
    }
}

/// Signs a checkpoint: its body followed by a blank line and the signature line.
pub fn sign_checkpoint(checkpoint: &Checkpoint, signer: &Signer) -> String {
    match sign_note(&checkpoint.body(), signer) {
        Ok(note) => note,
        // Checkpoint::new and parse_body admit only single printable lines, and body()
        // ends every line with a newline, so the note text is always valid.
        Err(error) => unreachable!("a checkpoint body is always a valid note text: {error}"),
    }
}

/// Opens a signed checkpoint: checks the signature by `verifier` and parses the body.
///
/// The origin is returned, not compared: the caller checks it names the log it expects.
pub fn open_checkpoint(
    note: impl AsRef<[u8]>,
    verifier: &Verifier,
) -> Result<Checkpoint, CheckpointError> {
    let body = open_note(note.as_ref(), verifier)?;
    Checkpoint::parse_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::hash::empty_root;

    #[test]
    fn body_parse_names_the_bad_line() {
        let good =
            Checkpoint::new("example.com/log", 7, empty_root(), vec![]).expect("valid fields");
        assert_eq!(Checkpoint::parse_body(&good.body()), Ok(good.clone()));
        assert_eq!(
            Checkpoint::parse_body("example.com/log\n7\n"),
            Err(CheckpointError::MissingLines { found: 2 })
        );
        assert_eq!(
            Checkpoint::parse_body("\n7\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"),
            Err(CheckpointError::EmptyOrigin)
        );
        for size in ["07", "", "-1", "+7", "18446744073709551616", "7 "] {
            let body = format!("o\n{size}\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n");
            assert_eq!(
                Checkpoint::parse_body(&body),
                Err(CheckpointError::Size {
                    text: size.to_string()
                }),
                "size {size:?}"
            );
        }
        for root in [
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV=",
            "AAAA",
            "",
        ] {
            let body = format!("o\n0\n{root}\n");
            assert_eq!(
                Checkpoint::parse_body(&body),
                Err(CheckpointError::RootHash {
                    text: root.to_string()
                }),
                "root {root:?}"
            );
        }
        assert_eq!(
            Checkpoint::parse_body("o\r\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"),
            Err(CheckpointError::ControlCharacter { line: 1 })
        );
        assert_eq!(
            Checkpoint::parse_body("o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\nx\n\n"),
            Err(CheckpointError::EmptyExtension { line: 5 })
        );
    }

    #[test]
    fn constructor_refuses_multi_line_fields() {
        assert!(matches!(
            Checkpoint::new("a\nb", 0, empty_root(), vec![]),
            Err(CheckpointError::Field {
                field: "origin",
                ..
            })
        ));
        assert!(matches!(
            Checkpoint::new("a", 0, empty_root(), vec![String::new()]),
            Err(CheckpointError::Field {
                field: "extension",
                ..
            })
        ));
    }
}
