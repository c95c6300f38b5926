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

#[cfg(not(target_arch = "wasm32"))]
static BROWSER_POOLS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Natively, GPU devices chosen after `use_browser_pools(true)` keep their memory as the browser
/// does ([`wgpu_with_browser_pools`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn use_browser_pools(on: bool) {
    BROWSER_POOLS.store(on, std::sync::atomic::Ordering::Relaxed);
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
            device: if BROWSER_POOLS.load(std::sync::atomic::Ordering::Relaxed) {
                match wgpu_with_browser_pools(adapter.device_kind()) {
                    Ok(device) => device,
                    Err(e) => {
                        let mut choice = DeviceChoice::cpu();
                        choice.warning = Some(format!(
                            "{} could not be initialised ({e}); using the CPU backend",
                            adapter.name
                        ));
                        return choice;
                    }
                }
            } else {
                Device::wgpu(adapter.device_kind())
            },
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

/// Gives the pages of `device`'s memory pools that hold no live tensor back to the device,
/// where those pools keep one exclusive page per allocation: in the browser (cubecl's only pools
/// in a wasm build), and natively on a device made with
/// [`wgpu_with_browser_pools`]. Elsewhere (the CPU backend; cubecl's shared pages natively,
/// which it relocates by itself) a no-op.
///
/// Why: in exclusive pools a new allocation takes a free page of any larger size class when its
/// own class has none. A small tensor that then lives on (a block's saved input, an adapter's
/// new values, its optimiser moments) pins a page sized for a transient as large as a layer's
/// dequantised weight, and the next such transient takes a new page: measured natively with the
/// browser's pools, a packed SmolLM2's step reserved 2.5 GB for 0.27 GB in use. Called between
/// a step's blocks and before long-lived tensors are made, each gets a page of its own size.
pub fn release_free_gpu_memory(device: &Device) {
    use burn::backend::{Backend, Dispatch};
    if has_exclusive_pools(device) {
        // Natively burn fuses operations and a dropped tensor's page is freed only when its
        // queue runs: the queue runs first, so what the browser (no fusion) has freed at once
        // is free here too. (A failed device fails the next operation, with its error.)
        #[cfg(not(target_arch = "wasm32"))]
        let _ = Dispatch::sync(device.as_dispatch());
        Dispatch::memory_cleanup(device.as_dispatch());
    }
}

/// `t`, copied onto a page of its own size where the pools are exclusive (see
/// [`release_free_gpu_memory`]): for a tensor that lives on, made while larger pages were free.
/// Elsewhere `t` itself.
pub fn on_own_page<const D: usize>(t: burn::tensor::Tensor<D>) -> burn::tensor::Tensor<D> {
    if has_exclusive_pools(&t.device()) {
        // While `t` is held, the operation cannot reuse its buffer: the result is a new one.
        // (Natively burn fuses, and would write it in place once `t` is dropped: it runs first.)
        let copy = t.clone().add_scalar(0.0);
        #[cfg(not(target_arch = "wasm32"))]
        {
            use burn::backend::{Backend, Dispatch};
            let _ = Dispatch::sync(copy.device().as_dispatch());
        }
        drop(t);
        copy
    } else {
        t
    }
}

#[cfg(target_arch = "wasm32")]
fn has_exclusive_pools(device: &Device) -> bool {
    use burn::backend::{Backend, Dispatch};
    Dispatch::memory_pool_usage(device.as_dispatch()).is_some()
}

#[cfg(not(target_arch = "wasm32"))]
fn has_exclusive_pools(device: &Device) -> bool {
    EXCLUSIVE_POOLS.lock().is_ok_and(|devices| devices.contains(device))
}

/// The native devices made with the browser's pools.
#[cfg(not(target_arch = "wasm32"))]
static EXCLUSIVE_POOLS: std::sync::Mutex<Vec<Device>> = std::sync::Mutex::new(Vec::new());

/// Natively, a wgpu device of `kind` whose memory is kept as the browser keeps it: one exclusive
/// page per allocation, in size classes (natively cubecl carves allocations from shared pages).
/// For measuring the page's GPU memory on a native adapter (`bench train --browser-pools`).
/// burn keeps one runtime per device, so a `kind` already in use by another device fails.
#[cfg(not(target_arch = "wasm32"))]
pub fn wgpu_with_browser_pools(kind: DeviceKind) -> Result<Device, String> {
    let device = Device::wgpu_options()
        .device_kind(kind)
        .memory_config(burn::tensor::wgpu::MemoryConfiguration::ExclusivePages)
        .init()
        .map_err(|e| e.to_string())?;
    if let Ok(mut devices) = EXCLUSIVE_POOLS.lock() {
        devices.push(device.clone());
    }
    Ok(device)
}
