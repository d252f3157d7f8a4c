//! Exports: the depth-profile figure as SVG and PNG, its data as CSV, the Trace as JSON.

mod common;

use depthlens::analysis::depth_profile;
use depthlens::model::TextTokenizer;
use depthlens::progress::Silent;
use depthlens::reference::{self, TraceOptions};

#[test]
fn export_writes_a_figure_its_data_and_the_trace() {
    let cfg = common::tiny_config("llama");
    let w = common::tiny_weights(&cfg, 3);
    let tok = TextTokenizer::byte_fallback();
    let trace = reference::trace_tokens(
        &cfg,
        &w,
        &tok,
        tok.tokens_from_ids(&[1, 2, 3, 4, 5]),
        TraceOptions::default(),
        &Silent,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let written = depthlens::export::export_all(&trace, "tiny <test> & co", dir.path()).unwrap();
    assert_eq!(written.len(), 4);

    let svg = std::fs::read_to_string(dir.path().join("depth_profile.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
    assert!(
        svg.contains("tiny &lt;test&gt; &amp; co"),
        "title is escaped"
    );
    for op in ["L0.attn", "L2.mlp", "final"] {
        assert!(svg.contains(op), "x label {op}");
    }
    let png = std::fs::read(dir.path().join("depth_profile.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // 960 px wide at scale 2.
    let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    assert_eq!(width, 1920);

    let csv = std::fs::read_to_string(dir.path().join("depth_profile.csv")).unwrap();
    let profile = depth_profile(&trace);
    assert_eq!(csv.lines().count(), 1 + trace.ops.len());
    let first: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(first[0], "L0.attn");
    assert_eq!(first[1].parse::<f32>().unwrap(), profile.hidden_rms[0]);
    // The first op's input is the embedding alone: its share is exactly 1.
    assert!((profile.embedding_share[0] - 1.0).abs() < 1e-5);

    let back: depthlens::trace::Trace =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("trace.json")).unwrap())
            .unwrap();
    assert_eq!(back, trace);
}
