//! Choosing where tensors live: the CPU (`flex`, always built), `wgpu`
//! (feature `wgpu`; also runs on Mesa's software Vulkan driver) or `cuda`
//! (feature `cuda`). Code that runs on any backend implements
//! [`BackendTask`]; [`dispatch`] runs it on the chosen one.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;

use crate::model::ModelError;

/// A device named on the command line or in a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// `cuda` when built with it, else the CPU.
    Auto,
    /// The CPU (burn `flex`).
    Cpu,
    /// burn `wgpu` (Vulkan, Metal, DX12; Mesa lavapipe without a GPU).
    Wgpu,
    /// burn `cuda` (NVIDIA).
    Cuda,
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!(
                "unknown device `{other}`; expected auto, cpu, wgpu or cuda"
            )),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        })
    }
}

/// The devices this build can use.
pub fn compiled_devices() -> Vec<DeviceChoice> {
    let mut devices = vec![DeviceChoice::Cpu];
    if cfg!(feature = "wgpu") {
        devices.push(DeviceChoice::Wgpu);
    }
    if cfg!(feature = "cuda") {
        devices.push(DeviceChoice::Cuda);
    }
    devices
}

/// Work that can run on any backend.
pub trait BackendTask {
    /// What the task returns.
    type Output;
    /// Runs on backend `B`; `name` is the device's name for reports.
    fn run<B: Backend>(self, device: B::Device, name: &'static str) -> Self::Output;
}

/// Why `choice` cannot be used by this binary at all (a GPU backend it was
/// built without), for refusing a request before any work; `None` for a
/// built-in device or `auto`.
pub fn not_built(choice: DeviceChoice) -> Option<String> {
    (choice != DeviceChoice::Auto && !compiled_devices().contains(&choice)).then(|| {
        format!(
            "device `{choice}` is not built into this saferc; rebuild with `--features {choice}`"
        )
    })
}

/// Runs `task` on the chosen device, or says why it cannot: a device not
/// built into this binary, or built but absent (no driver, no GPU), is an
/// error naming the device and the reason, never a panic. `auto` takes
/// `cuda` when it is built and present, else the CPU (with a note).
pub fn dispatch<T: BackendTask>(choice: DeviceChoice, task: T) -> Result<T::Output, ModelError> {
    let choice = match choice {
        DeviceChoice::Auto if cfg!(feature = "cuda") => match probe(DeviceChoice::Cuda) {
            Ok(()) => DeviceChoice::Cuda,
            Err(reason) => {
                crate::stderr_line!("note: --device auto: {reason}; using the CPU");
                DeviceChoice::Cpu
            }
        },
        DeviceChoice::Auto => DeviceChoice::Cpu,
        other => other,
    };
    if choice != DeviceChoice::Cpu && compiled_devices().contains(&choice) {
        probe(choice).map_err(|reason| ModelError::Device {
            reason: format!(
                "{reason}; pick another with --device (this saferc has {})",
                compiled_devices()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    }
    match choice {
        DeviceChoice::Cpu | DeviceChoice::Auto => {
            Ok(task.run::<crate::CpuBackend>(Default::default(), "cpu"))
        }
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu => Ok(task.run::<burn::backend::Wgpu>(Default::default(), "wgpu")),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda => Ok(task.run::<burn::backend::Cuda>(Default::default(), "cuda")),
        #[allow(unreachable_patterns)]
        other => Err(ModelError::Device {
            reason: not_built(other).unwrap_or_default(),
        }),
    }
}

/// Whether `choice` (a GPU backend built into this binary) can run: one
/// small tensor is made and read back on its default device. The backends
/// panic when they find no driver or adapter, often on a thread of their
/// own, which leaves the caller with a bare channel error; so every panic
/// during the probe is caught, the default report silenced, and the first
/// panic's message (the cause) becomes the reason. Answers once per device
/// and process.
pub fn probe(choice: DeviceChoice) -> Result<(), String> {
    use std::sync::{Arc, Mutex, OnceLock};
    static WGPU: OnceLock<Result<(), String>> = OnceLock::new();
    static CUDA: OnceLock<Result<(), String>> = OnceLock::new();
    let (cell, check): (_, fn() -> Vec<f32>) = match choice {
        DeviceChoice::Wgpu => (&WGPU, || round_trip::<Wgpu>()),
        DeviceChoice::Cuda => (&CUDA, || round_trip::<Cuda>()),
        DeviceChoice::Cpu | DeviceChoice::Auto => return Ok(()),
    };
    cell.get_or_init(|| {
        let first_panic: Arc<Mutex<Option<String>>> = Arc::default();
        let seen = first_panic.clone();
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("a panic without a message");
            let mut slot = seen.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| message.to_string());
        }));
        let outcome = std::panic::catch_unwind(check);
        std::panic::set_hook(report);
        let cause = first_panic.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (outcome, cause) {
            (Ok(values), _) if values == [1.0, 2.0] => Ok(()),
            (Ok(values), _) => Err(format!(
                "device `{choice}` is not usable: a test tensor came back as {values:?}"
            )),
            (Err(_), cause) => {
                let why = cause.unwrap_or_else(|| "it panicked".into());
                Err(format!(
                    "device `{choice}` is built into this saferc but cannot start here ({})",
                    headline(&why)
                ))
            }
        }
    })
    .clone()
}

/// The gist of a backend's panic message: its first line, cut before a
/// ` - ` detail (cudarc lists every library name it tried) or at 160
/// characters.
fn headline(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default().trim();
    let line = line.split(" - ").next().unwrap_or(line);
    match line.char_indices().nth(160) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

#[cfg(feature = "wgpu")]
type Wgpu = burn::backend::Wgpu;
#[cfg(not(feature = "wgpu"))]
type Wgpu = crate::CpuBackend;
#[cfg(feature = "cuda")]
type Cuda = burn::backend::Cuda;
#[cfg(not(feature = "cuda"))]
type Cuda = crate::CpuBackend;

/// `[1, 2]` through a tensor on `B`'s default device.
fn round_trip<B: Backend>() -> Vec<f32> {
    let device = B::Device::default();
    burn::tensor::Tensor::<B, 1>::from_floats([1.0, 2.0], &device)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
}
