//! The tokenizer of a GGUF file, rebuilt with the `tokenizers` crate from `tokenizer.ggml.*`:
//! byte-level BPE (`tokenizer.ggml.model = gpt2`) with the vocabulary, merges, control tokens as
//! special tokens, the pre-tokenizer that `tokenizer.ggml.pre` names (as the model's Hugging Face
//! `tokenizer.json` has it), and a BOS/EOS template only where `add_bos_token`/`add_eos_token` ask.

use std::collections::HashSet;

use candle_core::quantized::gguf_file::Value as GgufValue;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::sequence::Sequence as ProcessorSequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::gguf::GgufFile;
use super::tokenizer::{TextTokenizer, TokenizerKind};
use super::Error;

/// llama.cpp's `llama_token_type`.
const TOKEN_TYPE_UNKNOWN: u64 = 2;
const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

/// Llama 3's split regex (Hugging Face `tokenizer.json`; llama.cpp `llama-bpe`).
const REGEX_LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: Llama 3's with single digits.
const REGEX_QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What [`from_gguf`] built, and what the caller should tell the user.
pub struct GgufTokenizer {
    pub tokenizer: TextTokenizer,
    /// Ids that end a generation (`eos_token_id`, `eot_token_id`).
    pub eos_ids: Vec<u32>,
    pub warnings: Vec<String>,
}

fn err(file: &GgufFile, reason: impl Into<String>) -> Error {
    Error::Tokenizer {
        path: file.path().to_path_buf(),
        reason: reason.into(),
    }
}

fn string_array<'a>(file: &'a GgufFile, key: &str) -> Result<Option<Vec<&'a str>>, Error> {
    let Some(value) = file.metadata().get(key) else {
        return Ok(None);
    };
    let GgufValue::Array(items) = value else {
        return Err(err(file, format!("`{key}` is not an array")));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            GgufValue::String(s) => Ok(s.as_str()),
            other => Err(err(
                file,
                format!("`{key}`[{i}] is not a string: {other:?}"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn token_types(file: &GgufFile, n: usize) -> Result<Vec<u64>, Error> {
    let key = "tokenizer.ggml.token_type";
    let Some(value) = file.metadata().get(key) else {
        return Ok(vec![1; n]);
    };
    let GgufValue::Array(items) = value else {
        return Err(err(file, format!("`{key}` is not an array")));
    };
    if items.len() != n {
        return Err(err(
            file,
            format!("`{key}` has {} entries for {n} tokens", items.len()),
        ));
    }
    items
        .iter()
        .map(|v| match *v {
            GgufValue::I32(t) => u64::try_from(t).ok(),
            GgufValue::U32(t) => Some(u64::from(t)),
            GgufValue::I8(t) => u64::try_from(t).ok(),
            GgufValue::U8(t) => Some(u64::from(t)),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| err(file, format!("`{key}` holds non-integer entries")))
}

fn token_id(file: &GgufFile, key: &str, n: usize) -> Result<Option<u32>, Error> {
    match file.opt_u64(key)? {
        None => Ok(None),
        Some(id) if (id as usize) < n => Ok(Some(id as u32)),
        Some(id) => Err(err(
            file,
            format!("`{key}` = {id} is outside the {n}-token vocabulary"),
        )),
    }
}

/// The pre-tokenizer (and NFC for Qwen2) a `tokenizer.ggml.pre` value stands for, as the model's
/// Hugging Face `tokenizer.json` has it. `None` for values this reader does not know.
fn pipeline(pre: &str) -> Result<Option<Pipeline>, tokenizers::Error> {
    let split = |regex: &str| -> Result<PreTokenizerWrapper, tokenizers::Error> {
        Ok(Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )?
        .into())
    };
    Ok(Some(match pre {
        // GPT-2's regex inside ByteLevel.
        "default" | "gpt2" | "mpt" | "olmo" | "jais" => Pipeline {
            nfc: false,
            pre: ByteLevel::new(false, true, true).into(),
            ignore_merges: false,
        },
        // SmolLM / StarCoder: every digit on its own, then GPT-2's regex (llama.cpp splits by
        // `\p{N}` first, the Hugging Face tokenizer by `Digits(individual_digits)`).
        "smollm" | "starcoder" | "refact" | "codeshell" => Pipeline {
            nfc: false,
            pre: Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            ignore_merges: false,
        },
        "llama-bpe" | "llama3" | "smaug-bpe" => Pipeline {
            nfc: false,
            pre: Sequence::new(vec![
                split(REGEX_LLAMA3)?,
                ByteLevel::new(false, true, false).into(),
            ])
            .into(),
            ignore_merges: true,
        },
        "qwen2" | "stablelm2" => Pipeline {
            nfc: true,
            pre: Sequence::new(vec![
                split(REGEX_QWEN2)?,
                ByteLevel::new(false, false, false).into(),
            ])
            .into(),
            ignore_merges: false,
        },
        _ => return Ok(None),
    }))
}

struct Pipeline {
    nfc: bool,
    pre: PreTokenizerWrapper,
    ignore_merges: bool,
}

/// Every character that the byte-level alphabet maps to itself (printable ASCII but space).
fn byte_level_plain(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_graphic())
}

/// Build the tokenizer from the metadata. `Ok(None)`: the file ships no tokenizer.
pub fn from_gguf(file: &GgufFile) -> Result<Option<GgufTokenizer>, Error> {
    let Some(model) = file.opt_str("tokenizer.ggml.model")? else {
        return Ok(None);
    };
    if model != "gpt2" {
        return Err(err(
            file,
            format!(
                "tokenizer.ggml.model `{model}` is not supported (only `gpt2`, byte-level BPE); \
                 SentencePiece (`llama`) vocabularies are not rebuilt yet"
            ),
        ));
    }
    let tokens = string_array(file, "tokenizer.ggml.tokens")?
        .ok_or_else(|| err(file, "`tokenizer.ggml.tokens` is missing"))?;
    let merges = string_array(file, "tokenizer.ggml.merges")?
        .ok_or_else(|| err(file, "`tokenizer.ggml.merges` is missing"))?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    err(
                        file,
                        format!("`tokenizer.ggml.merges`[{i}] = {m:?} is not two tokens"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let types = token_types(file, tokens.len())?;
    let mut warnings = Vec::new();

    let mut seen = HashSet::with_capacity(tokens.len());
    let duplicates = tokens.iter().filter(|t| !seen.insert(**t)).count();
    if duplicates > 0 {
        warnings.push(format!(
            "the GGUF vocabulary lists {duplicates} token strings twice; those later ids never come out of the tokenizer"
        ));
    }
    // Keep the first id of a repeated string, as llama.cpp's text-to-token map does.
    let mut vocab = Vocab::default();
    for (i, t) in tokens.iter().enumerate() {
        vocab.entry(t.to_string()).or_insert(i as u32);
    }
    let pre = file.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
    let pipeline = match pipeline(pre).map_err(|e| err(file, e.to_string()))? {
        Some(p) => p,
        None => {
            warnings.push(format!(
                "tokenizer.ggml.pre `{pre}` is not known to depthlens; pre-tokenizing with GPT-2's \
                 regex, so some prompts may split differently from the original tokenizer"
            ));
            pipeline("gpt2")
                .map_err(|e| err(file, e.to_string()))?
                .ok_or_else(|| err(file, "internal: no GPT-2 pipeline"))?
        }
    };
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pipeline.ignore_merges)
        .build()
        .map_err(|e| err(file, format!("BPE from tokenizer.ggml.tokens/merges: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    if pipeline.nfc {
        tok.with_normalizer(Some(NFC))
            .map_err(|e| err(file, e.to_string()))?;
    }
    tok.with_pre_tokenizer(Some(pipeline.pre));
    tok.with_decoder(Some(ByteLevelDecoder::new(false, false, true)));

    // Control tokens (`<|im_start|>`, `<|endoftext|>`) match as whole strings and keep their ids.
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_UNKNOWN)
        .map(|(s, _)| AddedToken::from(s.to_string(), true))
        .collect();
    tok.add_special_tokens(specials)
        .map_err(|e| err(file, e.to_string()))?;
    // User-defined tokens are stored byte-level encoded; only those that read the same as raw
    // text can be matched as whole strings without changing their ids.
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(s, &t)| t == TOKEN_TYPE_USER_DEFINED && byte_level_plain(s))
        .map(|(s, _)| AddedToken::from(s.to_string(), false).normalized(false))
        .collect();
    tok.add_tokens(user).map_err(|e| err(file, e.to_string()))?;

    let n = tokens.len();
    let bos = token_id(file, "tokenizer.ggml.bos_token_id", n)?;
    let eos = token_id(file, "tokenizer.ggml.eos_token_id", n)?;
    let eot = token_id(file, "tokenizer.ggml.eot_token_id", n)?;
    // Absent means no: Hugging Face byte-level BPE tokenizers add nothing unless configured to.
    let add_bos = file
        .opt_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(false);
    let add_eos = file
        .opt_bool("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false);
    // Offsets untrimmed: each token's span includes its leading space, so spans tile the prompt.
    let byte_level_pp: PostProcessorWrapper = ByteLevel::new(false, false, true).into();
    let mut steps = vec![byte_level_pp];
    if add_bos || add_eos {
        let named = |id: Option<u32>, what: &str| -> Result<(String, u32), Error> {
            let id = id.ok_or_else(|| {
                err(
                    file,
                    format!("add_{what}_token is true but {what}_token_id is missing"),
                )
            })?;
            Ok((tokens[id as usize].to_string(), id))
        };
        let mut single = Vec::new();
        let mut special = Vec::new();
        if add_bos {
            let (t, id) = named(bos, "bos")?;
            single.push(t.clone());
            special.push((t, id));
        }
        single.push("$A".to_string());
        if add_eos {
            let (t, id) = named(eos, "eos")?;
            single.push(t.clone());
            special.push((t, id));
        }
        let pair: Vec<String> = single
            .iter()
            .cloned()
            .chain(single.iter().map(|s| {
                if s == "$A" {
                    "$B:1".into()
                } else {
                    format!("{s}:1")
                }
            }))
            .collect();
        let template = TemplateProcessing::builder()
            .try_single(single)
            .and_then(|b| b.try_pair(pair))
            .map_err(|e| err(file, format!("BOS/EOS template: {e}")))?
            .special_tokens(special)
            .build()
            .map_err(|e| err(file, format!("BOS/EOS template: {e}")))?;
        steps.push(template.into());
    }
    let post: PostProcessorWrapper = if steps.len() == 1 {
        steps.remove(0)
    } else {
        ProcessorSequence::new(steps).into()
    };
    tok.with_post_processor(Some(post));

    let mut eos_ids: Vec<u32> = eos.into_iter().chain(eot).collect();
    eos_ids.dedup();
    Ok(Some(GgufTokenizer {
        tokenizer: TextTokenizer::from_tokenizer(
            tok,
            TokenizerKind::Gguf {
                source: file.path().display().to_string(),
                model: model.to_string(),
                pre: pre.to_string(),
            },
        ),
        eos_ids,
        warnings,
    }))
}
