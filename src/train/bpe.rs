//! A byte-level BPE tokenizer trained on the corpus, so that demo-model tokens read as words.

use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use super::Error;

/// The document separator; also the first id of the vocabulary.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Train a GPT-2-style byte-level BPE (no prefix space) with `vocab_size` entries on `corpus`.
pub fn train_bpe(corpus: &Path, vocab_size: usize) -> Result<Tokenizer, Error> {
    let fail = |e: tokenizers::Error| Error::Tokenizer(e.to_string());
    let byte_level = ByteLevel::new(false, true, true);
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer
        .with_pre_tokenizer(Some(byte_level))
        .with_decoder(Some(byte_level))
        .with_post_processor(Some(byte_level));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let file = corpus
        .to_str()
        .ok_or_else(|| Error::Tokenizer(format!("{}: path is not UTF-8", corpus.display())))?;
    tokenizer
        .train_from_files(&mut trainer, vec![file.to_string()])
        .map_err(fail)?;
    Ok(tokenizer)
}

/// Tokenise a large text in line-aligned chunks (in parallel); boundaries fall on newlines, where
/// the byte-level pre-tokenizer splits anyway.
pub fn encode_corpus(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, Error> {
    const CHUNK: usize = 1 << 16;
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + CHUNK).min(text.len());
        while end < text.len() && !text.is_char_boundary(end) {
            end += 1;
        }
        if let Some(nl) = text[end..].find('\n') {
            end += nl + 1;
        } else {
            end = text.len();
        }
        chunks.push(&text[start..end]);
        start = end;
    }
    let encodings = tokenizer
        .encode_batch(chunks, false)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    Ok(encodings
        .iter()
        .flat_map(|e| e.get_ids().iter().copied())
        .collect())
}
