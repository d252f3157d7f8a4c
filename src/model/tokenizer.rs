//! Text <-> token ids: the checkpoint's `tokenizer.json` through the `tokenizers` crate, or a plain
//! byte-level fallback (id = byte value) that callers must announce.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;

/// One token of a prompt: its id, the text it covers, and where that text lies in the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub id: u32,
    /// The prompt text this token covers (for ids given directly: its decoded text).
    pub text: String,
    /// The vocabulary entry as the tokenizer stores it (e.g. `Ġthe`).
    pub piece: String,
    /// Byte span `[start, end)` in the prompt (or in the concatenated decoded text).
    pub start: usize,
    pub end: usize,
}

/// Where the tokenizer came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TokenizerKind {
    /// A Hugging Face `tokenizer.json` (file or checkpoint metadata).
    HuggingFace { source: String },
    /// Rebuilt from a GGUF file's `tokenizer.ggml.*` metadata (`model` and `pre` as named there).
    Gguf {
        source: String,
        model: String,
        pre: String,
    },
    /// No tokenizer shipped: each byte of UTF-8 text is one token with id = byte value.
    ByteFallback,
}

pub struct TextTokenizer {
    inner: Option<tokenizers::Tokenizer>,
    pub kind: TokenizerKind,
}

fn tokenizer_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl TextTokenizer {
    pub fn from_json_bytes(bytes: &[u8], source: &Path) -> Result<Self, Error> {
        let inner =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| tokenizer_error(source, e))?;
        Ok(Self {
            inner: Some(inner),
            kind: TokenizerKind::HuggingFace {
                source: source.display().to_string(),
            },
        })
    }

    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_bytes(&bytes, path)
    }

    /// Wrap a tokenizer built in code (a GGUF file's, from its metadata).
    pub fn from_tokenizer(inner: tokenizers::Tokenizer, kind: TokenizerKind) -> Self {
        Self {
            inner: Some(inner),
            kind,
        }
    }

    pub fn byte_fallback() -> Self {
        Self {
            inner: None,
            kind: TokenizerKind::ByteFallback,
        }
    }

    /// Vocabulary size as the tokenizer sees it (added tokens included).
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Some(t) => t.get_vocab_size(true),
            None => 256,
        }
    }

    /// Tokenise a prompt, adding the special tokens the tokenizer's post-processor adds (as
    /// transformers does by default).
    pub fn encode(&self, text: &str) -> Result<Vec<Token>, Error> {
        let Some(tok) = &self.inner else {
            return Ok(text
                .bytes()
                .enumerate()
                .map(|(i, b)| Token {
                    id: u32::from(b),
                    text: byte_text(b),
                    piece: byte_text(b),
                    start: i,
                    end: i + 1,
                })
                .collect());
        };
        let enc = tok
            .encode(text, true)
            .map_err(|e| tokenizer_error(Path::new("tokenizer"), e))?;
        // Tokenizers trim whitespace out of offsets (`trim_offsets`) and give every byte-token of
        // one character the character's span. Spans here tile the prompt instead: a token starts
        // where the previous one ended, and a continuation byte-token covers nothing.
        let mut prev_end = 0;
        Ok(enc
            .get_ids()
            .iter()
            .zip(enc.get_tokens())
            .zip(enc.get_offsets())
            .map(|((&id, piece), &(_, end))| {
                let (start, end) = (prev_end, end.max(prev_end));
                prev_end = end;
                Token {
                    id,
                    text: text.get(start..end).unwrap_or("").to_string(),
                    piece: piece.clone(),
                    start,
                    end,
                }
            })
            .collect())
    }

    /// Tokens for ids given directly: each id decoded on its own, spans over the concatenation.
    pub fn tokens_from_ids(&self, ids: &[u32]) -> Vec<Token> {
        let mut offset = 0;
        ids.iter()
            .map(|&id| {
                let text = self.decode(&[id]);
                let piece = match &self.inner {
                    Some(t) => t.id_to_token(id).unwrap_or_else(|| text.clone()),
                    None => text.clone(),
                };
                let start = offset;
                offset += text.len();
                Token {
                    id,
                    text,
                    piece,
                    start,
                    end: offset,
                }
            })
            .collect()
    }

    /// Decode ids to text (special tokens kept, so a researcher sees `<|im_start|>` and the like).
    pub fn decode(&self, ids: &[u32]) -> String {
        match &self.inner {
            Some(t) => t.decode(ids, false).unwrap_or_else(|_| {
                ids.iter()
                    .map(|&id| t.id_to_token(id).unwrap_or_else(|| format!("<{id}>")))
                    .collect()
            }),
            None => {
                let bytes: Vec<u8> = ids.iter().filter_map(|&id| u8::try_from(id).ok()).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
        }
    }

    /// Serialise the tokenizer (`None` for the byte fallback).
    pub fn to_json(&self) -> Option<String> {
        self.inner.as_ref().and_then(|t| t.to_string(false).ok())
    }

    /// Where the tokenizer was read from, if a file.
    pub fn source_path(&self) -> Option<PathBuf> {
        match &self.kind {
            TokenizerKind::HuggingFace { source } | TokenizerKind::Gguf { source, .. } => {
                Some(PathBuf::from(source))
            }
            TokenizerKind::ByteFallback => None,
        }
    }
}

fn byte_text(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        (b as char).to_string()
    } else {
        format!("<0x{b:02X}>")
    }
}
