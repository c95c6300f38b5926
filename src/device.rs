//! Choosing where tensors live: a hardware GPU through wgpu when there is one, burn's CPU
//! backend (flex) otherwise. A software adapter (lavapipe, SwiftShader) is about 60× slower than
//! the CPU backend, so it counts as "no GPU" unless wgpu is asked for explicitly.

use burn::tensor::Device;
#[cfg(not(target_arch = "wasm32"))]
use burn::tensor::DeviceKind;
use burn::tensor::wgpu::wgpu;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DevicePreference {
    /// A hardware GPU if one exists, else the CPU backend.
    #[default]
    Auto,
    /// burn's CPU backend.
    Cpu,
    /// wgpu on the best adapter, software ones included.
    Wgpu,
}

impl std::str::FromStr for DevicePreference {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            other => Err(format!("unknown device `{other}`; use auto, cpu or wgpu")),
        }
    }
}

/// A wgpu adapter as reported by the driver.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterSummary {
    /// Adapter name, e.g. "NVIDIA H100" or "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// Graphics API (Vulkan, Metal, Dx12, BrowserWebGpu, ...).
    pub backend: String,
    /// Discrete/Integrated/Virtual GPU or Cpu (software).
    pub device_type: String,
    /// Whether this is a software rasteriser.
    pub is_software: bool,
    /// Largest buffer, bytes.
    pub max_buffer_size: u64,
    /// Largest storage-buffer binding, bytes.
    pub max_storage_buffer_binding_size: u64,
}

impl AdapterSummary {
    /// Summarises a wgpu adapter.
    pub fn of(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let limits = adapter.limits();
        Self {
            name: info.name,
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            is_software: info.device_type == wgpu::DeviceType::Cpu,
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn device_kind(&self) -> DeviceKind {
        match self.device_type.as_str() {
            "DiscreteGpu" => DeviceKind::DiscreteGpu(0),
            "IntegratedGpu" => DeviceKind::IntegratedGpu(0),
            "VirtualGpu" => DeviceKind::VirtualGpu(0),
            "Cpu" => DeviceKind::Cpu,
            _ => DeviceKind::DefaultDevice,
        }
    }
}

/// The chosen device and what to tell the user about the choice.
#[derive(Debug, Clone)]
pub struct DeviceChoice {
    /// The burn device.
    pub device: Device,
    /// One line: backend and adapter.
    pub description: String,
    /// Set when the preference could not be honoured (e.g. no GPU: fell back to the CPU).
    pub warning: Option<String>,
    /// The adapter, when wgpu is used.
    pub adapter: Option<AdapterSummary>,
}

impl DeviceChoice {
    /// burn's CPU backend.
    pub fn cpu() -> Self {
        Self {
            device: Device::flex(),
            description: "cpu (burn flex backend)".into(),
            warning: None,
            adapter: None,
        }
    }
}

/// Lists the wgpu adapters the system offers, best first (hardware before software).
#[cfg(not(target_arch = "wasm32"))]
pub async fn list_adapters() -> Vec<AdapterSummary> {
    // Vulkan, Metal and DX12 only: the GL backend is not used by burn, and probing it prints
    // EGL noise on headless machines.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let mut out: Vec<AdapterSummary> = instance
        .enumerate_adapters(wgpu::Backends::PRIMARY)
        .await
        .iter()
        .map(AdapterSummary::of)
        .collect();
    out.sort_by_key(|a| (a.is_software, a.device_type != "DiscreteGpu"));
    out
}

/// Keeps what burn's GPU backends learn about this machine (autotune results, in a
/// `gpu-autotune` build) in the user's cache directory (`~/.cache/cubecl` on Linux), so the
/// tuning is paid once per machine and not once per run. cubecl's own default is a `target/`
/// folder beside the outermost Cargo.toml above the working directory, which would tune again
/// for every checkout and working directory. A `cubecl.toml` or `burn.toml` that names another
/// place, and the `CUBECL_*` variables, still decide. Call it before the first GPU device is
/// made; returns the directory, or `None` when cubecl's configuration was already fixed.
#[cfg(all(feature = "gpu-autotune", not(target_arch = "wasm32")))]
pub fn keep_gpu_tuning_per_machine() -> Option<std::path::PathBuf> {
    use cubecl::config::cache::CacheConfig;
    use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    if matches!(config.environment.path, CacheConfig::Target) {
        config.environment.path = CacheConfig::Global;
    }
    let root = config.environment.path.root();
    CubeClRuntimeConfig::try_set(config).then_some(root)
}

/// Picks the device for a preference (natively; the browser uses [`init_webgpu`]).
#[cfg(not(target_arch = "wasm32"))]
pub async fn select_device(pref: DevicePreference) -> DeviceChoice {
    if pref == DevicePreference::Cpu {
        return DeviceChoice::cpu();
    }
    let adapters = list_adapters().await;
    let best = adapters
        .first()
        .filter(|a| pref == DevicePreference::Wgpu || !a.is_software);
    match best {
        Some(adapter) => DeviceChoice {
            device: Device::wgpu(adapter.device_kind()),
            description: format!("wgpu ({}, {}, {})", adapter.name, adapter.backend, adapter.device_type),
            warning: adapter.is_software.then(|| {
                format!(
                    "{} is a software adapter, much slower than the CPU backend; use it only to test the GPU path",
                    adapter.name
                )
            }),
            adapter: Some(adapter.clone()),
        },
        None => {
            let why = match adapters.first() {
                Some(a) => format!("only the software adapter {} was found", a.name),
                None => "no wgpu adapter was found".to_string(),
            };
            let mut choice = DeviceChoice::cpu();
            choice.warning = Some(match pref {
                DevicePreference::Wgpu => format!("{why}; using the CPU backend (install a Vulkan/Metal/DX12 driver)"),
                _ => format!(
                    "{why}; using the CPU backend (ask for the wgpu device explicitly to use the software adapter)"
                ),
            });
            choice
        }
    }
}

#[cfg(target_arch = "wasm32")]
thread_local! {
    /// burn registers one wgpu runtime per device for the life of the page, so the first
    /// successful initialisation is kept and handed out again.
    static WEBGPU: std::cell::RefCell<Option<DeviceChoice>> = const { std::cell::RefCell::new(None) };
}

/// Asks the browser for a WebGPU adapter, reports its name and limits, and initialises burn's
/// wgpu runtime on it. Errors say what to do. Later calls return the device the first
/// successful call set up (burn cannot register a second runtime for the same device).
#[cfg(target_arch = "wasm32")]
pub async fn init_webgpu() -> Result<DeviceChoice, String> {
    crate::wasm::run_static_constructors();
    if let Some(choice) = WEBGPU.with(|c| c.borrow().clone()) {
        return Ok(choice);
    }
    let choice = init_webgpu_once().await?;
    WEBGPU.with(|c| *c.borrow_mut() = Some(choice.clone()));
    Ok(choice)
}

#[cfg(target_arch = "wasm32")]
async fn init_webgpu_once() -> Result<DeviceChoice, String> {
    if !crate::wasm::has_webgpu() {
        return Err(crate::wasm::NO_WEBGPU.to_string());
    }
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::BROWSER_WEBGPU,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let options = wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    };
    let adapter = instance.request_adapter(&options).await.map_err(|e| {
        format!(
            "the browser offers WebGPU but no adapter ({e}); {}",
            crate::wasm::NO_WEBGPU_FIX
        )
    })?;
    let mut summary = AdapterSummary::of(&adapter);
    if summary.name.is_empty() {
        summary.name = "WebGPU adapter".into();
    }
    let device = Device::wgpu_options().init_async().await.map_err(|e| {
        format!("WebGPU device initialisation failed: {e}; reload the page, or close other GPU-heavy tabs")
    })?;
    Ok(DeviceChoice {
        device,
        description: format!("WebGPU ({})", summary.name),
        warning: summary.is_software.then(|| {
            "this WebGPU adapter is a software fallback (e.g. SwiftShader): expect it to be slow; use the tiny model".to_string()
        }),
        adapter: Some(summary),
    })
}

/// Resolves after `ms` milliseconds through the global `setTimeout` (page or worker), letting the
/// event loop run meanwhile: input, rendering, a worker's messages.
#[cfg(target_arch = "wasm32")]
pub async fn sleep_ms(ms: i32) {
    use wasm_bindgen::JsCast;
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let timer = js_sys::Reflect::get(&js_sys::global(), &"setTimeout".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        let _ = match timer {
            Some(set_timeout) => set_timeout.call2(&wasm_bindgen::JsValue::NULL, &resolve, &ms.into()),
            None => resolve.call0(&wasm_bindgen::JsValue::NULL),
        };
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// Waits `ms` milliseconds (natively the thread sleeps: the CLI blocks on the same futures).
#[cfg(not(target_arch = "wasm32"))]
pub async fn sleep_ms(ms: i32) {
    std::thread::sleep(std::time::Duration::from_millis(ms.max(0) as u64));
}

/// Gives the event loop a turn between chunks of long work in the browser; nothing natively,
/// where the CLI blocks on the same async functions.
pub async fn yield_now() {
    #[cfg(target_arch = "wasm32")]
    sleep_ms(0).await;
}
