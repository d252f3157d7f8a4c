//! `depthlens kernels`: what the Vulkan driver compiled each kernel into (registers, spills,
//! instruction counts), so a tile experiment can be judged by more than its time.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;

use crate::engine::driver_stats::{Capture, DriverInspector, Executable};
use crate::engine::kernels::{
    nt_tile_is_valid, nt_tile_wgsl, wgsl_with_source, KernelId, KernelSpec, KERNELS, NT_XLARGE_DEEP,
};

use super::bench::{parse_tile, read_shader};

#[derive(Args, Debug)]
pub struct KernelsArgs {
    /// Only kernels whose name contains this (e.g. `matmul_nt`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Build the kernels of this WGSL file's name from this file instead of the shipped one, as
    /// `bench --shader` does. Repeatable.
    #[arg(long = "shader")]
    pub shaders: Vec<PathBuf>,
    /// Also compile the NT GEMM at this tile, as BM,BN,BK,TM,TN. Repeatable.
    #[arg(long = "tile")]
    pub tiles: Vec<String>,
    /// The Vulkan device whose name contains this (default: the first real GPU).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Write each kernel's textual internal representations (where the driver gives them) to
    /// DIR/KERNEL.N.txt.
    #[arg(long)]
    pub ir: Option<PathBuf>,
    /// Write each kernel's pipeline-cache blob to DIR/KERNEL.blob: the driver's compiled code, in
    /// its own format (on NVIDIA, `benches/nvidia_sass.py DIR` cuts the SASS out for `nvdisasm`).
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

pub fn run(args: KernelsArgs) -> anyhow::Result<ExitCode> {
    let mut replaced: Vec<(String, String)> = Vec::new();
    for path in &args.shaders {
        let (file, source) = read_shader(path)?;
        if !KERNELS.iter().any(|k| k.file == file) {
            bail!(
                "shader {}: no kernel is built from a file named `{file}`",
                path.display()
            );
        }
        replaced.push((file, source));
    }
    let source_of = |spec: &KernelSpec| -> String {
        replaced
            .iter()
            .find(|(f, _)| f == spec.file)
            .map_or_else(|| spec.source.to_owned(), |(_, s)| s.clone())
    };

    // (label, entry point, full WGSL)
    let wanted = |name: &str| {
        args.filter
            .as_ref()
            .is_none_or(|f| name.contains(f.as_str()))
    };
    let mut jobs: Vec<(String, &str, String)> = Vec::new();
    for spec in KERNELS {
        if wanted(spec.name) {
            jobs.push((
                spec.name.to_owned(),
                spec.entry,
                wgsl_with_source(spec, &source_of(spec)),
            ));
        }
    }
    // Devices with more than WebGPU's default workgroup memory build the xlarge GEMM 16-deep.
    let xl = &KERNELS[KernelId::MatmulNtXLarge as usize];
    if wanted(xl.name) {
        jobs.push((
            format!("{} 16-deep", xl.name),
            xl.entry,
            nt_tile_wgsl(xl, NT_XLARGE_DEEP, &source_of(xl)),
        ));
    }
    let nt = &KERNELS[KernelId::MatmulNtLarge as usize];
    for text in &args.tiles {
        let tile = parse_tile(text).context("--tile")?;
        if !nt_tile_is_valid(tile) {
            bail!("--tile {text}: every thread must load whole vec4s of both slices");
        }
        jobs.push((
            format!("gemm_nt {text}"),
            nt.entry,
            nt_tile_wgsl(nt, tile, &source_of(nt)),
        ));
    }
    if jobs.is_empty() {
        bail!("no kernel matches --filter");
    }

    let inspector = DriverInspector::open(args.adapter.as_deref())?;
    println!("driver statistics from {}", inspector.device_name());
    for dir in args.ir.iter().chain(&args.binary) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let write = |path: PathBuf, bytes: &[u8]| {
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
    };
    let capture = Capture {
        representations: args.ir.is_some(),
        cache_data: args.binary.is_some(),
    };
    let mut rows: Vec<(String, Executable)> = Vec::new();
    for (label, entry, wgsl) in &jobs {
        let inspection = inspector
            .inspect(label, wgsl, entry, capture)
            .with_context(|| format!("kernel `{label}`"))?;
        let stem = label.replace([' ', ','], "_");
        if let (Some(dir), Some(blob)) = (&args.binary, &inspection.cache_data) {
            write(dir.join(format!("{stem}.blob")), blob)?;
        }
        for exe in inspection.executables {
            if let Some(dir) = &args.ir {
                for (i, (name, text)) in exe.representations.iter().enumerate() {
                    write(
                        dir.join(format!("{stem}.{i}.txt")),
                        format!("// {name}\n{text}").as_bytes(),
                    )?;
                }
            }
            rows.push((label.clone(), exe));
        }
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

/// One row per executable, one column per statistic name any of them reports.
fn print_table(rows: &[(String, Executable)]) {
    let mut names: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for (_, exe) in rows {
        for s in &exe.statistics {
            if seen.insert(s.name.clone()) {
                names.push(s.name.clone());
            }
        }
    }
    println!();
    println!("| kernel | executable | subgroup | {} |", names.join(" | "));
    println!("|---|---|---|{}", "---|".repeat(names.len()));
    for (label, exe) in rows {
        let cells: Vec<String> = names
            .iter()
            .map(|n| {
                exe.statistics
                    .iter()
                    .find(|s| &s.name == n)
                    .map_or_else(String::new, |s| s.value.to_string())
            })
            .collect();
        println!(
            "| {label} | {} | {} | {} |",
            exe.name,
            exe.subgroup_size,
            cells.join(" | ")
        );
    }
    println!();
    for n in &names {
        if let Some(s) = rows
            .iter()
            .flat_map(|(_, e)| &e.statistics)
            .find(|s| &s.name == n)
        {
            println!("{n}: {}", s.description);
        }
    }
}
