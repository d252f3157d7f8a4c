//! The desktop app (eframe with the wgpu renderer): open a checkpoint, type a prompt, and see
//! per token how each layer attends over depth, how norms grow and how gradients spread; two
//! models side by side. Data flows one way: checkpoint -> Trace (the [`worker`]) -> figure
//! descriptions ([`crate::figures`]) -> drawing ([`views`], [`widgets`]).

pub mod app;
pub mod bench;
pub mod layout;
pub mod theme;
pub mod views;
pub mod widgets;
pub mod worker;

pub use app::{App, AppOptions};

use std::sync::Arc;

/// The GPU setup of the app's window and of its headless harness: the best adapter (a real GPU
/// before a software one) with its own limits, not WebGPU's defaults, so the engine's compute
/// kernels run on the same device as the renderer.
pub fn wgpu_setup() -> egui_wgpu::WgpuSetup {
    let mut setup = egui_wgpu::WgpuSetupCreateNew::without_display_handle();
    // GL under WebGL2 limits has no compute; Vulkan (lavapipe without a GPU) always does here.
    if wgpu::Backends::from_env().is_none() {
        setup.instance_descriptor.backends = wgpu::Backends::PRIMARY;
    }
    setup.native_adapter_selector = Some(Arc::new(|adapters, _surface| {
        let mut best: Vec<&wgpu::Adapter> = adapters.iter().collect();
        best.sort_by_key(|a| crate::engine::adapter_rank(&a.get_info()));
        best.first().map(|a| (*a).clone()).ok_or_else(|| {
            "no wgpu adapter (install a Vulkan driver; Mesa's lavapipe works without a GPU)"
                .to_string()
        })
    }));
    setup.device_descriptor = Arc::new(|adapter| wgpu::DeviceDescriptor {
        label: Some("depthlens app"),
        required_features: wgpu::Features::empty(),
        required_limits: adapter.limits(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    });
    egui_wgpu::WgpuSetup::CreateNew(setup)
}

/// Open the app's window and run until it closes.
pub fn run(options: AppOptions) -> Result<(), eframe::Error> {
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("depthlens")
            .with_inner_size([1400.0, 900.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options: egui_wgpu::WgpuConfiguration {
            wgpu_setup: wgpu_setup(),
            ..Default::default()
        },
        ..Default::default()
    };
    eframe::run_native(
        "depthlens",
        native,
        Box::new(move |cc| Ok(Box::new(App::new(cc, options)))),
    )
}
