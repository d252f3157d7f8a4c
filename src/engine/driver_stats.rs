//! What the Vulkan driver compiled a kernel into: registers, spills, instruction counts and, where
//! the driver gives them, its internal representations, through
//! `VK_KHR_pipeline_executable_properties`.
//!
//! GEMM tuning without this is guesswork: a tile that needs more registers than the hardware
//! gives spills to local memory, and only the driver knows. wgpu does not expose the extension,
//! so this opens its own Vulkan device, turns the kernel's WGSL into SPIR-V with naga the way
//! wgpu does for our trusted modules (no bounds checks, no loop bounding), and builds the compute
//! pipeline with statistics captured. It compiles; it never dispatches.

use std::ffi::CStr;

use ash::vk;

/// Why the driver's statistics could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DriverStatsError {
    #[error(
        "cannot load the Vulkan loader (libvulkan.so.1): {0}; install it (Debian: libvulkan1)"
    )]
    Loader(String),
    #[error("Vulkan call `{call}` failed: {result}")]
    Vulkan {
        call: &'static str,
        result: vk::Result,
    },
    #[error("no Vulkan device reports VK_KHR_pipeline_executable_properties (devices: {0}); its driver cannot say what it compiled")]
    NoDevice(String),
    #[error("kernel `{kernel}`: naga could not turn its WGSL into SPIR-V: {reason}")]
    Shader { kernel: String, reason: String },
}

fn vk_err(call: &'static str) -> impl FnOnce(vk::Result) -> DriverStatsError {
    move |result| DriverStatsError::Vulkan { call, result }
}

/// One statistic as the driver names it (`Register Count`, `Spill Count`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct Statistic {
    pub name: String,
    pub description: String,
    pub value: StatisticValue,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StatisticValue {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
}

impl std::fmt::Display for StatisticValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(v) => write!(f, "{v}"),
            Self::Uint(v) => write!(f, "{v}"),
            Self::Float(v) => write!(f, "{v}"),
        }
    }
}

/// One compiled executable of a pipeline (a compute pipeline usually has one).
#[derive(Clone, Debug)]
pub struct Executable {
    pub name: String,
    pub description: String,
    pub subgroup_size: u32,
    pub statistics: Vec<Statistic>,
    /// (name, text) of each textual internal representation, when asked for.
    pub representations: Vec<(String, String)>,
}

/// What one kernel compiled into.
#[derive(Clone, Debug, Default)]
pub struct Inspection {
    pub executables: Vec<Executable>,
    /// The driver's pipeline-cache blob for this pipeline alone, when asked for: opaque and
    /// driver-specific (on NVIDIA, benches/nvidia_sass.py cuts the machine code out of it).
    pub cache_data: Option<Vec<u8>>,
}

/// What to capture besides the statistics.
#[derive(Clone, Copy, Debug, Default)]
pub struct Capture {
    /// The driver's textual internal representations (none on NVIDIA).
    pub representations: bool,
    /// The pipeline-cache blob.
    pub cache_data: bool,
}

/// A Vulkan device opened only to compile pipelines and ask the driver about them.
pub struct DriverInspector {
    // Kept alive for the instance's function pointers.
    _entry: ash::Entry,
    instance: ash::Instance,
    device: ash::Device,
    executables: ash::khr::pipeline_executable_properties::Device,
    device_name: String,
    writer: SpirvWriter,
}

/// How wgpu-hal writes SPIR-V for a device: the version, and whether the driver zeroes workgroup
/// memory itself (Vulkan 1.3) or naga writes the zeroing into the shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpirvWriter {
    pub version: (u8, u8),
    pub native_workgroup_zeroing: bool,
}

fn c_text(bytes: &[std::ffi::c_char]) -> String {
    // Fixed-size C strings from the driver: up to the first NUL, lossy if not UTF-8.
    let bytes: Vec<u8> = bytes.iter().map(|&c| c as u8).collect();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl DriverInspector {
    /// Opens the device whose name contains `name_contains` (case-insensitive), else the first
    /// one that reports the extension, real GPUs before software ones.
    pub fn open(name_contains: Option<&str>) -> Result<Self, DriverStatsError> {
        // SAFETY: loading the system's Vulkan loader; its symbols are what ash expects.
        let entry =
            unsafe { ash::Entry::load() }.map_err(|e| DriverStatsError::Loader(e.to_string()))?;
        let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_3);
        let info = vk::InstanceCreateInfo::default().application_info(&app);
        // SAFETY: a plain instance with no layers or extensions.
        let instance =
            unsafe { entry.create_instance(&info, None) }.map_err(vk_err("vkCreateInstance"))?;
        match Self::open_device(&instance, name_contains) {
            Ok((device, device_name, writer)) => {
                let executables =
                    ash::khr::pipeline_executable_properties::Device::new(&instance, &device);
                Ok(Self {
                    _entry: entry,
                    instance,
                    device,
                    executables,
                    device_name,
                    writer,
                })
            }
            Err(e) => {
                // SAFETY: nothing was created from the instance.
                unsafe { instance.destroy_instance(None) };
                Err(e)
            }
        }
    }

    fn open_device(
        instance: &ash::Instance,
        name_contains: Option<&str>,
    ) -> Result<(ash::Device, String, SpirvWriter), DriverStatsError> {
        // SAFETY: queries on a live instance.
        let physical = unsafe { instance.enumerate_physical_devices() }
            .map_err(vk_err("vkEnumeratePhysicalDevices"))?;
        let mut candidates = Vec::new();
        let mut names = Vec::new();
        for pd in physical {
            // SAFETY: `pd` came from this instance.
            let props = unsafe { instance.get_physical_device_properties(pd) };
            let name = c_text(&props.device_name);
            names.push(name.clone());
            let extensions = unsafe { instance.enumerate_device_extension_properties(pd) }
                .map_err(vk_err("vkEnumerateDeviceExtensionProperties"))?;
            let has_extension = extensions.iter().any(|e| {
                e.extension_name_as_c_str()
                    .is_ok_and(|n| n == ash::khr::pipeline_executable_properties::NAME)
            });
            let wanted =
                name_contains.is_none_or(|w| name.to_lowercase().contains(&w.to_lowercase()));
            if has_extension && wanted {
                let rank = match props.device_type {
                    vk::PhysicalDeviceType::DISCRETE_GPU => 0,
                    vk::PhysicalDeviceType::INTEGRATED_GPU => 1,
                    vk::PhysicalDeviceType::CPU => 3,
                    _ => 2,
                };
                candidates.push((rank, pd, name, props.api_version));
            }
        }
        candidates.sort_by_key(|c| c.0);
        let Some((_, pd, name, api)) = candidates.into_iter().next() else {
            return Err(DriverStatsError::NoDevice(names.join(", ")));
        };
        // SAFETY: `pd` came from this instance.
        let families = unsafe { instance.get_physical_device_queue_family_properties(pd) };
        let family = families
            .iter()
            .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE))
            .ok_or_else(|| DriverStatsError::NoDevice(format!("{name} has no compute queue")))?;
        let priorities = [1.0];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(family as u32)
            .queue_priorities(&priorities)];
        let extensions = [ash::khr::pipeline_executable_properties::NAME.as_ptr()];
        let mut feature = vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR::default()
            .pipeline_executable_info(true);
        // Vulkan 1.3 requires the driver to zero workgroup memory on request, and wgpu then asks it
        // to (our kernels are built with wgpu's default, zeroing on).
        let native_workgroup_zeroing = api >= vk::API_VERSION_1_3;
        let mut zeroing = vk::PhysicalDeviceZeroInitializeWorkgroupMemoryFeatures::default()
            .shader_zero_initialize_workgroup_memory(true);
        let mut info = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .enabled_extension_names(&extensions)
            .push_next(&mut feature);
        if native_workgroup_zeroing {
            info = info.push_next(&mut zeroing);
        }
        // SAFETY: the extension and its feature were checked above; zeroing is core in 1.3.
        let device =
            unsafe { instance.create_device(pd, &info, None) }.map_err(vk_err("vkCreateDevice"))?;
        // The SPIR-V version wgpu-hal writes for this API version.
        let version = if api >= vk::API_VERSION_1_3 {
            (1, 6)
        } else if api >= vk::API_VERSION_1_2 {
            (1, 5)
        } else {
            (1, 3)
        };
        let writer = SpirvWriter {
            version,
            native_workgroup_zeroing,
        };
        Ok((device, name, writer))
    }

    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// Compiles `entry` of `wgsl` (a kernel's full source, constants included) and returns what
    /// the driver says about each executable; with `representations`, also its textual IRs.
    pub fn inspect(
        &self,
        kernel: &str,
        wgsl: &str,
        entry: &str,
        capture: Capture,
    ) -> Result<Inspection, DriverStatsError> {
        let spirv = kernel_spirv(kernel, wgsl, entry, self.writer)?;
        let module_info = vk::ShaderModuleCreateInfo::default().code(&spirv.words);
        // SAFETY: valid SPIR-V from naga's writer for a validated module.
        let module = unsafe { self.device.create_shader_module(&module_info, None) }
            .map_err(vk_err("vkCreateShaderModule"))?;
        let result = self.with_module(module, &spirv.bindings, entry, capture);
        // SAFETY: the pipeline built from it is gone (with_module destroys what it creates).
        unsafe { self.device.destroy_shader_module(module, None) };
        result
    }

    fn with_module(
        &self,
        module: vk::ShaderModule,
        bindings: &[(u32, vk::DescriptorType)],
        entry: &str,
        capture: Capture,
    ) -> Result<Inspection, DriverStatsError> {
        let layout_bindings: Vec<_> = bindings
            .iter()
            .map(|&(binding, ty)| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(binding)
                    .descriptor_type(ty)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let set_info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&layout_bindings);
        // SAFETY: plain object creation on a live device; each object is destroyed below.
        let set_layout = unsafe { self.device.create_descriptor_set_layout(&set_info, None) }
            .map_err(vk_err("vkCreateDescriptorSetLayout"))?;
        let set_layouts = [set_layout];
        let layout_info = vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts);
        let layout = unsafe { self.device.create_pipeline_layout(&layout_info, None) }
            .map_err(vk_err("vkCreatePipelineLayout"));
        let result = layout.and_then(|layout| {
            let r = self.pipeline_stats(module, layout, entry, capture);
            unsafe { self.device.destroy_pipeline_layout(layout, None) };
            r
        });
        unsafe { self.device.destroy_descriptor_set_layout(set_layout, None) };
        result
    }

    fn pipeline_stats(
        &self,
        module: vk::ShaderModule,
        layout: vk::PipelineLayout,
        entry: &str,
        capture: Capture,
    ) -> Result<Inspection, DriverStatsError> {
        let name = std::ffi::CString::new(entry).map_err(|_| DriverStatsError::Shader {
            kernel: entry.to_owned(),
            reason: "entry point name has a NUL".into(),
        })?;
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(module)
            .name(&name);
        let mut flags = vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR;
        if capture.representations {
            flags |= vk::PipelineCreateFlags::CAPTURE_INTERNAL_REPRESENTATIONS_KHR;
        }
        let info = [vk::ComputePipelineCreateInfo::default()
            .stage(stage)
            .layout(layout)
            .flags(flags)];
        // An empty cache per pipeline, so that its blob holds this kernel only.
        let cache = if capture.cache_data {
            // SAFETY: plain object creation; destroyed below.
            unsafe {
                self.device
                    .create_pipeline_cache(&vk::PipelineCacheCreateInfo::default(), None)
            }
            .map_err(vk_err("vkCreatePipelineCache"))?
        } else {
            vk::PipelineCache::null()
        };
        // SAFETY: the module, layout and entry point are valid; one pipeline is destroyed below.
        let result = unsafe { self.device.create_compute_pipelines(cache, &info, None) }
            .map_err(|(_, e)| vk_err("vkCreateComputePipelines")(e))
            .and_then(|pipelines| {
                let pipeline = pipelines[0];
                let executables = self.executables_of(pipeline, capture.representations);
                unsafe { self.device.destroy_pipeline(pipeline, None) };
                let cache_data = if capture.cache_data {
                    // SAFETY: the cache is live and was filled by the pipeline above.
                    Some(
                        unsafe { self.device.get_pipeline_cache_data(cache) }
                            .map_err(vk_err("vkGetPipelineCacheData"))?,
                    )
                } else {
                    None
                };
                Ok(Inspection {
                    executables: executables?,
                    cache_data,
                })
            });
        if capture.cache_data {
            unsafe { self.device.destroy_pipeline_cache(cache, None) };
        }
        result
    }

    fn executables_of(
        &self,
        pipeline: vk::Pipeline,
        representations: bool,
    ) -> Result<Vec<Executable>, DriverStatsError> {
        let pipeline_info = vk::PipelineInfoKHR::default().pipeline(pipeline);
        // SAFETY: the pipeline was created with CAPTURE_STATISTICS on a device with the feature.
        let props = unsafe {
            self.executables
                .get_pipeline_executable_properties(&pipeline_info)
        }
        .map_err(vk_err("vkGetPipelineExecutablePropertiesKHR"))?;
        let mut out = Vec::new();
        for (index, p) in props.iter().enumerate() {
            let exe = vk::PipelineExecutableInfoKHR::default()
                .pipeline(pipeline)
                .executable_index(index as u32);
            let stats = unsafe { self.executables.get_pipeline_executable_statistics(&exe) }
                .map_err(vk_err("vkGetPipelineExecutableStatisticsKHR"))?;
            let statistics = stats
                .iter()
                .map(|s| Statistic {
                    name: c_text(&s.name),
                    description: c_text(&s.description),
                    // SAFETY: `format` says which member of the union the driver wrote.
                    value: unsafe {
                        match s.format {
                            vk::PipelineExecutableStatisticFormatKHR::BOOL32 => {
                                StatisticValue::Bool(s.value.b32 != 0)
                            }
                            vk::PipelineExecutableStatisticFormatKHR::INT64 => {
                                StatisticValue::Int(s.value.i64)
                            }
                            vk::PipelineExecutableStatisticFormatKHR::FLOAT64 => {
                                StatisticValue::Float(s.value.f64)
                            }
                            _ => StatisticValue::Uint(s.value.u64),
                        }
                    },
                })
                .collect();
            let representations = if representations {
                self.representations_of(&exe)?
            } else {
                Vec::new()
            };
            out.push(Executable {
                name: c_text(&p.name),
                description: c_text(&p.description),
                subgroup_size: p.subgroup_size,
                statistics,
                representations,
            });
        }
        Ok(out)
    }

    /// The textual IRs: the usual two calls, sizes first, then the data into our buffers.
    fn representations_of(
        &self,
        exe: &vk::PipelineExecutableInfoKHR<'_>,
    ) -> Result<Vec<(String, String)>, DriverStatsError> {
        let call = "vkGetPipelineExecutableInternalRepresentationsKHR";
        // SAFETY: sizes only: p_data stays null.
        let mut reps = unsafe {
            self.executables
                .get_pipeline_executable_internal_representations(exe)
        }
        .map_err(vk_err(call))?;
        let mut buffers: Vec<Vec<u8>> = reps.iter().map(|r| vec![0u8; r.data_size]).collect();
        for (r, buf) in reps.iter_mut().zip(buffers.iter_mut()) {
            r.p_data = buf.as_mut_ptr().cast();
        }
        let mut count = reps.len() as u32;
        // SAFETY: each p_data points at data_size writable bytes that outlive the call.
        let status = unsafe {
            (self
                .executables
                .fp()
                .get_pipeline_executable_internal_representations_khr)(
                self.executables.device(),
                exe,
                &mut count,
                reps.as_mut_ptr(),
            )
        };
        if status != vk::Result::SUCCESS && status != vk::Result::INCOMPLETE {
            return Err(vk_err(call)(status));
        }
        Ok(reps
            .iter()
            .zip(buffers)
            .take(count as usize)
            .filter(|(r, _)| r.is_text != 0)
            .map(|(r, buf)| {
                let text = CStr::from_bytes_until_nul(&buf)
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| String::from_utf8_lossy(&buf).into_owned());
                (c_text(&r.name), text)
            })
            .collect())
    }
}

/// A kernel's SPIR-V as wgpu-hal writes it for a module built with
/// `ShaderRuntimeChecks::unchecked()` (no index clamps, no loop counters, no division checks),
/// and the descriptor bindings of its group 0.
pub fn kernel_spirv(
    kernel: &str,
    wgsl: &str,
    entry: &str,
    writer: SpirvWriter,
) -> Result<Spirv, DriverStatsError> {
    let shader_err = |reason: String| DriverStatsError::Shader {
        kernel: kernel.to_owned(),
        reason,
    };
    let module =
        naga::front::wgsl::parse_str(wgsl).map_err(|e| shader_err(e.emit_to_string(wgsl)))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| shader_err(e.emit_to_string(wgsl)))?;
    let mut options = naga::back::spv::Options {
        lang_version: writer.version,
        force_loop_bounding: false,
        emit_int_div_checks: false,
        zero_initialize_workgroup_memory: if writer.native_workgroup_zeroing {
            naga::back::spv::ZeroInitializeWorkgroupMemoryMode::Native
        } else {
            naga::back::spv::ZeroInitializeWorkgroupMemoryMode::Polyfill
        },
        ..Default::default()
    };
    options.flags.remove(naga::back::spv::WriterFlags::DEBUG);
    options.bounds_check_policies = naga::proc::BoundsCheckPolicies {
        index: naga::proc::BoundsCheckPolicy::Unchecked,
        buffer: naga::proc::BoundsCheckPolicy::Unchecked,
        image_load: naga::proc::BoundsCheckPolicy::Unchecked,
        binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
    };
    let pipeline = naga::back::spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: entry.to_owned(),
    };
    let words = naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline))
        .map_err(|e| shader_err(e.to_string()))?;
    let mut bindings: Vec<(u32, vk::DescriptorType)> = module
        .global_variables
        .iter()
        .filter_map(|(_, var)| {
            let binding = var.binding.as_ref()?;
            let ty = match var.space {
                // Our uniform parameters are bound with a dynamic offset.
                naga::AddressSpace::Uniform => vk::DescriptorType::UNIFORM_BUFFER_DYNAMIC,
                naga::AddressSpace::Storage { .. } => vk::DescriptorType::STORAGE_BUFFER,
                _ => return None,
            };
            (binding.group == 0).then_some((binding.binding, ty))
        })
        .collect();
    bindings.sort_by_key(|b| b.0);
    bindings.dedup_by_key(|b| b.0);
    Ok(Spirv { words, bindings })
}

/// SPIR-V words and the `(binding, descriptor type)` pairs of group 0, sorted.
pub struct Spirv {
    pub words: Vec<u32>,
    pub bindings: Vec<(u32, vk::DescriptorType)>,
}

impl Drop for DriverInspector {
    fn drop(&mut self) {
        // SAFETY: every object made from the device was destroyed where it was made.
        unsafe {
            self.device.destroy_device(None);
            self.instance.destroy_instance(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::{nt_tile_wgsl, wgsl, NtTile, KERNELS};

    const WRITER: SpirvWriter = SpirvWriter {
        version: (1, 6),
        native_workgroup_zeroing: true,
    };

    #[test]
    fn every_shipped_kernel_becomes_spirv_with_its_bindings() {
        for spec in KERNELS {
            let spirv = kernel_spirv(spec.name, &wgsl(spec), spec.entry, WRITER)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(spirv.words[0], 0x0723_0203, "{}: SPIR-V magic", spec.name);
            assert_eq!(spirv.words[1], 0x0001_0600, "{}: SPIR-V 1.6", spec.name);
            assert!(
                spirv
                    .bindings
                    .contains(&(0, vk::DescriptorType::UNIFORM_BUFFER_DYNAMIC)),
                "{}: parameters at binding 0",
                spec.name
            );
            for binding in 1..=spec.storage.len() as u32 {
                assert!(
                    spirv
                        .bindings
                        .contains(&(binding, vk::DescriptorType::STORAGE_BUFFER)),
                    "{}: storage buffer at binding {binding}",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn an_nt_tile_experiment_becomes_spirv_and_bad_wgsl_names_its_kernel() {
        let nt = KERNELS
            .iter()
            .find(|k| k.entry == "gemm_nt")
            .expect("an NT kernel");
        let tile = NtTile {
            bm: 128,
            bn: 128,
            bk: 8,
            tm: 8,
            tn: 8,
        };
        kernel_spirv("tile", &nt_tile_wgsl(nt, tile, nt.source), nt.entry, WRITER)
            .unwrap_or_else(|e| panic!("{e}"));
        let err = kernel_spirv("broken", "fn main( {", "main", WRITER)
            .err()
            .expect("a parse error");
        assert!(err.to_string().contains("kernel `broken`"), "{err}");
    }
}
