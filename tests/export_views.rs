//! Every view as a file: the numbers written are the Trace's, the SVG keeps its text as text,
//! the PNG is the SVG at `--scale`, long prompts keep their labels apart, and nothing is
//! overwritten or left half-written.

use std::path::Path;
use std::process::Command;

use depthlens::export::views::{self, FigureKind, Format, ViewInput};
use depthlens::figures::{ModelInput, Selection, Toggles};
use depthlens::model::Checkpoint;
use depthlens::progress::Silent;
use depthlens::reference::{self, Input, TraceOptions};
use depthlens::trace::Trace;

fn demo(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/demo")
        .join(name)
}

/// A prompt with commas, quotes and a line break, so CSV quoting is exercised.
const PROMPT: &str = "Sir, \"you\" are\nhere, or not";

fn trace_of(name: &str, grads: bool) -> Trace {
    let ckpt = Checkpoint::open(&demo(name), &Silent).unwrap();
    let opts = TraceOptions {
        grads,
        ..Default::default()
    };
    reference::trace(&ckpt, &Input::Text(PROMPT.into()), opts, &Silent).unwrap()
}

fn view<'a>(models: &[(&'a str, &'a Trace)], token: usize, op: usize) -> ViewInput<'a> {
    ViewInput {
        models: models
            .iter()
            .map(|&(name, trace)| ModelInput {
                name,
                trace,
                grads: trace.grads.is_some().then_some(trace),
                training: None,
            })
            .collect(),
        selection: Selection { token, op },
        toggles: Toggles::default(),
    }
}

fn records(csv: &str) -> (Vec<String>, Vec<csv::StringRecord>) {
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let header = r.headers().unwrap().iter().map(String::from).collect();
    (header, r.records().map(|x| x.unwrap()).collect())
}

#[test]
fn depth_attention_csv_and_json_hold_the_traces_numbers_for_the_selected_token() {
    let trace = trace_of("block.safetensors", false);
    let t = 3;
    let input = view(&[("block.safetensors", &trace)], t, 0);
    let (header, rows) = records(&views::csv(FigureKind::DepthAttention, &input).unwrap());
    assert_eq!(
        header,
        ["token_index", "token", "op", "source", "alpha", "share"]
    );
    let expected: usize = trace.ops.iter().map(|o| o.sources.len()).sum();
    assert_eq!(rows.len(), expected);
    let mut k = 0;
    for op in &trace.ops {
        for (i, source) in op.sources.iter().enumerate() {
            let r = &rows[k];
            k += 1;
            assert_eq!(r[0].parse::<usize>().unwrap(), t);
            assert_eq!(&r[1], trace.tokens[t].text, "token text survives quoting");
            assert_eq!((&r[2], &r[3]), (op.name.as_str(), source.as_str()));
            assert_eq!(r[4].parse::<f32>().unwrap(), op.alpha[t][i]);
            assert_eq!(r[5].parse::<f32>().unwrap(), op.shares[t][i]);
        }
    }
    let json: serde_json::Value =
        serde_json::from_str(&views::json(FigureKind::DepthAttention, &input).unwrap()).unwrap();
    let m = &json["models"][0];
    assert_eq!(m["token_index"], t);
    for (o, op) in m["ops"].as_array().unwrap().iter().zip(&trace.ops) {
        assert_eq!(o["name"], op.name.as_str());
        let alpha: Vec<f32> = serde_json::from_value(o["alpha"][0].clone()).unwrap();
        assert_eq!(alpha, op.alpha[t]);
    }
    let tokens: Vec<depthlens::trace::Token> = serde_json::from_value(m["tokens"].clone()).unwrap();
    assert_eq!(tokens, trace.tokens);
}

#[test]
fn token_source_norms_and_gradients_data_equal_the_trace() {
    let trace = trace_of("block.safetensors", true);
    let op = 5;
    let input = view(&[("block.safetensors", &trace)], 0, op);
    let (_, rows) = records(&views::csv(FigureKind::TokenSource, &input).unwrap());
    assert_eq!(rows.len(), trace.tokens.len() * trace.ops[op].sources.len());
    for r in &rows {
        let t: usize = r[0].parse().unwrap();
        let i = trace.ops[op]
            .sources
            .iter()
            .position(|s| s == &r[3])
            .unwrap();
        assert_eq!(&r[2], trace.ops[op].name);
        assert_eq!(r[4].parse::<f32>().unwrap(), trace.ops[op].alpha[t][i]);
    }
    let (header, rows) = records(&views::csv(FigureKind::Norms, &input).unwrap());
    assert_eq!(
        header,
        [
            "token_index",
            "token",
            "op",
            "hidden_rms",
            "output_rms",
            "partial_rms"
        ]
    );
    assert_eq!(rows.len(), trace.tokens.len() * trace.ops.len());
    for r in &rows {
        let t: usize = r[0].parse().unwrap();
        let o = trace.ops.iter().find(|o| o.name == r[2]).unwrap();
        assert_eq!(r[3].parse::<f32>().unwrap(), o.hidden_rms[t]);
        assert_eq!(r[4].parse::<f32>().unwrap(), o.output_rms[t]);
        match &o.partial_rms {
            Some(p) => assert_eq!(r[5].parse::<f32>().unwrap(), p[t]),
            None => assert_eq!(&r[5], ""),
        }
    }
    let g = trace.grads.as_ref().unwrap();
    let (header, rows) = records(&views::csv(FigureKind::Gradients, &input).unwrap());
    assert_eq!(header, ["group", "bin_low", "bin_high", "count"]);
    assert_eq!(rows.len(), g.histograms.len() * (g.bin_edges.len() - 1));
    for (k, r) in rows.iter().enumerate() {
        let (h, b) = (
            &g.histograms[k / (g.bin_edges.len() - 1)],
            k % (g.bin_edges.len() - 1),
        );
        assert_eq!(&r[0], h.group);
        assert_eq!(r[1].parse::<f32>().unwrap(), g.bin_edges[b]);
        assert_eq!(r[3].parse::<u64>().unwrap(), h.counts[b]);
    }
    let json: serde_json::Value =
        serde_json::from_str(&views::json(FigureKind::Gradients, &input).unwrap()).unwrap();
    let back: depthlens::trace::Gradients =
        serde_json::from_value(json["models"][0]["grads"].clone()).unwrap();
    assert_eq!(&back, g);
}

#[test]
fn the_svg_keeps_labels_as_text_and_the_png_is_it_at_the_scale() {
    let a = trace_of("full.safetensors", false);
    let b = trace_of("baseline.safetensors", false);
    let input = view(
        &[("full.safetensors", &a), ("baseline.safetensors", &b)],
        2,
        0,
    );
    for kind in [
        FigureKind::DepthAttention,
        FigureKind::TokenSource,
        FigureKind::Norms,
        FigureKind::Difference,
    ] {
        let svg = views::svg(kind, &input).unwrap();
        let opt = resvg::usvg::Options::default();
        let tree =
            resvg::usvg::Tree::from_str(&svg, &opt).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let texts: Vec<String> = roxmltree_texts(&svg);
        assert!(
            texts.iter().any(|t| t.contains("full.safetensors")),
            "{kind:?}: model named"
        );
        match kind {
            FigureKind::DepthAttention | FigureKind::Difference => {
                assert!(
                    texts.iter().any(|t| t == "emb") && texts.iter().any(|t| t == "L0.attn"),
                    "{kind:?}: source labels"
                )
            }
            _ => assert!(
                texts.iter().any(|t| t.contains("Sir")),
                "{kind:?}: token labels"
            ),
        }
        let png = views::render(kind, Format::Png, &input, 1.5).unwrap();
        let (w, h) = (
            u32::from_be_bytes(png[16..20].try_into().unwrap()),
            u32::from_be_bytes(png[20..24].try_into().unwrap()),
        );
        let size = tree.size();
        assert_eq!(
            (w, h),
            (
                (size.width() * 1.5).ceil() as u32,
                (size.height() * 1.5).ceil() as u32
            )
        );
    }
    // Block and baseline do not line up source by source: a clear refusal, not a wrong picture.
    let c = trace_of("block.safetensors", false);
    let input = view(
        &[("block.safetensors", &c), ("baseline.safetensors", &b)],
        2,
        0,
    );
    assert!(views::svg(FigureKind::Difference, &input).is_err());
}

/// The contents of every `<text>` element.
fn roxmltree_texts(svg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find("<text") {
        let after = &rest[i..];
        let start = after.find('>').unwrap() + 1;
        let end = after.find("</text>").unwrap();
        out.push(
            after[start..end]
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        );
        rest = &after[end..];
    }
    out
}

#[test]
fn a_2048_token_prompt_keeps_its_token_labels_apart() {
    // The byte-level baseline of the tests: 2048 bytes are 2048 tokens.
    let cfg = depthlens::model::ModelConfig::from_json(
        &serde_json::json!({
            "model_type": "llama", "vocab_size": 256, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0
        }),
        "test",
    )
    .unwrap();
    let w = depthlens::model::random::random_weights(
        &cfg,
        depthlens::model::random::RandomInit::TEST,
        1,
    )
    .unwrap();
    let tok = depthlens::model::TextTokenizer::byte_fallback();
    let text: String = "to be or not ".repeat(158)[..2048].to_string();
    let ids: Vec<u32> = text.bytes().map(u32::from).collect();
    let trace = reference::trace_tokens(
        &cfg,
        &w,
        &tok,
        tok.tokens_from_ids(&ids),
        TraceOptions::default(),
        &Silent,
    )
    .unwrap();
    let input = view(&[("long", &trace)], 0, 0);
    let svg = views::svg(FigureKind::TokenSource, &input).unwrap();
    // Row labels are `i text`, at y positions at least 13 units apart.
    let mut ys: Vec<f64> = Vec::new();
    for line in svg.lines().filter(|l| {
        l.starts_with("<text") && l.contains(r#"text-anchor="end""#) && !l.contains("rotate")
    }) {
        let y = line
            .split("y=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        ys.push(y.parse().unwrap());
    }
    assert!(
        ys.len() >= 16 && ys.len() <= 2048 / 16,
        "{} row labels",
        ys.len()
    );
    for pair in ys.windows(2) {
        assert!(pair[1] - pair[0] >= 13.0 - 1e-6, "labels {pair:?} overlap");
    }
    // And the cells travel as one image, not 4096 rectangles... of text there is little.
    assert!(svg.len() < 400_000, "{} bytes", svg.len());
}

fn depthlens(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_depthlens"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_refuses_to_overwrite_without_force_and_leaves_nothing_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("da.svg");
    let model = demo("block.safetensors");
    let base = [
        "export",
        model.to_str().unwrap(),
        "--prompt",
        "To be",
        "--figure",
        "depth-attention",
        "--out",
    ];
    let (code, err) = depthlens(&[&base[..], &[out.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{err}");
    let first = std::fs::read_to_string(&out).unwrap();
    assert!(first.starts_with("<svg"));
    let (code, err) = depthlens(&[&base[..], &[out.to_str().unwrap(), "--token", "0"]].concat());
    assert_eq!(code, 2);
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first, "untouched");
    let (code, err) = depthlens(
        &[
            &base[..],
            &[out.to_str().unwrap(), "--token", "0", "--force"],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    assert_ne!(
        std::fs::read_to_string(&out).unwrap(),
        first,
        "overwritten with --force"
    );
    // A missing folder: exit 2 naming it, and no stray file anywhere.
    let missing = dir.path().join("no/such/dir/da.png");
    let (code, err) = depthlens(&[&base[..], &[missing.to_str().unwrap()]].concat());
    assert_eq!(code, 2);
    assert!(err.contains("no/such/dir"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("da.svg")],
        "no temporary files left"
    );
    let (code, err) =
        depthlens(&[&base[..], &[dir.path().join("da.txt").to_str().unwrap()]].concat());
    assert_eq!(code, 2);
    assert!(err.contains(".svg, .png, .csv or .json"), "{err}");
}

#[test]
fn figure_all_writes_every_view_in_every_format_and_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo("block.safetensors");
    let out = dir.path().join("all");
    let (code, err) = depthlens(&[
        "export",
        model.to_str().unwrap(),
        "--prompt",
        "To be, or not",
        "--figure",
        "all",
        "--op",
        "L3.mlp",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for kind in ["depth-attention", "token-source", "norms", "gradients"] {
        for ext in ["svg", "png", "csv", "json"] {
            assert!(out.join(format!("{kind}.{ext}")).is_file(), "{kind}.{ext}");
        }
    }
    assert!(err.contains("skipped difference"), "{err}");
    let trace: Trace =
        serde_json::from_str(&std::fs::read_to_string(out.join("trace.json")).unwrap()).unwrap();
    assert!(
        trace.grads.is_some(),
        "the gradients' backward is in the trace"
    );
}

#[test]
fn the_training_figure_holds_the_log_the_demo_checkpoint_carries() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo("block.safetensors");
    let out = dir.path().join("training.csv");
    let (code, err) = depthlens(&[
        "export",
        model.to_str().unwrap(),
        "--prompt",
        "To be",
        "--figure",
        "training",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (header, rows) = records(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(
        header,
        ["step", "train_loss", "val_loss", "group", "grad_norm"]
    );
    // Against the log beside the checkpoint, read column by column.
    let log = std::fs::read_to_string(demo("block.train.csv")).unwrap();
    let mut lines = log.lines();
    let cols: Vec<&str> = lines.next().unwrap().split(',').collect();
    let groups: Vec<(usize, &str)> = cols
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.strip_prefix("grad_norm_").map(|g| (i, g)))
        .collect();
    let mut k = 0;
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        for &(i, g) in &groups {
            let r = &rows[k];
            k += 1;
            assert_eq!(&r[0], f[0]);
            assert_eq!(r[1].parse::<f32>().unwrap(), f[1].parse::<f32>().unwrap());
            assert_eq!(&r[3], g);
            assert_eq!(r[4].parse::<f32>().unwrap(), f[i].parse::<f32>().unwrap());
        }
    }
    assert_eq!(k, rows.len());
    let svg = dir.path().join("training.svg");
    let (code, err) = depthlens(&[
        "export",
        model.to_str().unwrap(),
        "--prompt",
        "To be",
        "--figure",
        "training",
        "--out",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read_to_string(&svg)
        .unwrap()
        .contains("Training loss of block.safetensors"));
}
