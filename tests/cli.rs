//! The `depthlens` binary as a user runs it: output, exit codes, one-line errors.

mod common;

use std::process::Command;

use depthlens::model::save::StoreDtype;

fn depthlens(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_depthlens"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inspect_reports_architecture_and_block_partition() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::tiny_config("block:4");
    let p = common::write_single(
        dir.path(),
        "m.safetensors",
        &cfg,
        &common::tiny_weights(&cfg, 1),
        StoreDtype::BF16,
    );
    let (code, out, err) = depthlens(&["inspect", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Block AttnRes (4 sublayers per block)"),
        "{out}"
    );
    assert!(
        out.contains("emb | L0.attn L0.mlp L1.attn L1.mlp | L2.attn L2.mlp"),
        "{out}"
    );
    assert!(out.contains("bf16"), "{out}");
    assert!(out.contains("byte-level fallback"), "{out}");
    let (code, json, _) = depthlens(&["inspect", p.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["config"]["attnres"]["block_size"], 4);
    assert!(v["parameters"].as_u64().unwrap() > 0);
}

#[test]
fn trace_writes_the_documented_json_schema() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::tiny_config("full");
    let p = common::write_single(
        dir.path(),
        "m.safetensors",
        &cfg,
        &common::tiny_weights(&cfg, 1),
        StoreDtype::F32,
    );
    let out_path = dir.path().join("trace.json");
    let (code, _, err) = depthlens(&[
        "trace",
        p.to_str().unwrap(),
        "--prompt",
        "Hi there",
        "--grads",
        "--logits",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("byte-level"),
        "the fallback tokenizer is announced: {err}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    let t = v["tokens"].as_array().unwrap().len();
    assert_eq!(t, 8);
    let ops = v["ops"].as_array().unwrap();
    assert_eq!(ops.len(), 7);
    for key in [
        "name",
        "layer",
        "kind",
        "sources",
        "alpha",
        "hidden_rms",
        "output_rms",
        "grad_rms",
    ] {
        assert!(ops[2].get(key).is_some(), "op key {key}");
    }
    assert_eq!(ops[2]["alpha"].as_array().unwrap().len(), t);
    assert_eq!(ops[2]["alpha"][0].as_array().unwrap().len(), 3);
    assert_eq!(v["topk"][0].as_array().unwrap().len(), 5);
    assert!(v["loss"].as_f64().unwrap() > 0.0);
    assert_eq!(v["logits"][0].as_array().unwrap().len(), 300);
    assert!(v["grads"]["histograms"].as_array().unwrap().len() == 5);
}

#[test]
fn errors_exit_with_code_2_and_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"12345").unwrap();
    let (code, _, err) = depthlens(&["trace", bad.to_str().unwrap(), "--ids", "1,2"]);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("bad.safetensors"), "{err}");
    let cfg = common::tiny_config("llama");
    let p = common::write_single(
        dir.path(),
        "m.safetensors",
        &cfg,
        &common::tiny_weights(&cfg, 1),
        StoreDtype::F32,
    );
    let (code, _, err) = depthlens(&["trace", p.to_str().unwrap(), "--prompt", ""]);
    assert_eq!(code, 2);
    assert!(err.contains("empty"), "{err}");
    let (code, _, err) = depthlens(&[
        "trace",
        p.to_str().unwrap(),
        "--ids",
        "1,2",
        "--device",
        "gpu",
        "--grads",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--grads runs on the CPU reference"), "{err}");
}

#[test]
fn trace_on_the_gpu_names_its_adapter_and_agrees_with_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::tiny_config("block:3");
    let p = common::write_single(
        dir.path(),
        "m.safetensors",
        &cfg,
        &common::tiny_weights(&cfg, 4),
        StoreDtype::F32,
    );
    let run = |device: &str| {
        let out = dir.path().join(format!("{device}.json"));
        let (code, _, err) = depthlens(&[
            "trace",
            p.to_str().unwrap(),
            "--ids",
            "5,6,7,8,9",
            "--device",
            device,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        (
            serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(out).unwrap())
                .unwrap(),
            err,
        )
    };
    let (gpu, err) = run("gpu");
    assert!(err.contains("GPU adapter:"), "{err}");
    let (cpu, _) = run("cpu");
    assert_eq!(cpu["device"], "cpu-reference");
    assert_ne!(gpu["device"], "cpu-reference");
    let (a, b) = (gpu["loss"].as_f64().unwrap(), cpu["loss"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-4 * b, "loss {a} vs {b}");
}

#[test]
fn kernels_refuses_a_bad_tile_or_an_unknown_shader_file_before_opening_any_device() {
    let (code, _, err) = depthlens(&["kernels", "--tile", "128,64,8,8,4"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tile 128,64,8,8,4"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let stray = dir.path().join("stray.wgsl");
    std::fs::write(&stray, "fn f() {}").unwrap();
    let (code, _, err) = depthlens(&["kernels", "--shader", stray.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no kernel is built from a file named `stray.wgsl`"),
        "{err}"
    );
}

#[test]
fn bench_depth_cost_prints_attnres_against_weights_one_and_refuses_a_model_without_attnres() {
    let run = |arch: &str| {
        depthlens(&[
            "bench",
            "--synthetic",
            &format!("{arch},2,64"),
            "--tokens",
            "9",
            "--iters",
            "2",
            "--warmup",
            "0",
            "--depth-cost",
        ])
    };
    let (code, out, err) = run("block");
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .skip_while(|l| !l.starts_with("What AttnRes costs"))
        .find(|l| l.starts_with("| 9 |"))
        .unwrap_or_else(|| panic!("no T=9 row after the depth-cost heading:\n{out}"));
    let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
    assert_eq!(cells.len(), 9, "{row}");
    for cell in &cells[1..8] {
        let ms: f64 = cell.parse().unwrap_or_else(|_| panic!("{cell} in {row}"));
        assert!(ms.is_finite(), "{row}");
    }
    assert!(cells[8].ends_with('%'), "{row}");
    let (code, _, err) = run("baseline");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has no AttnRes"), "{err}");
}
