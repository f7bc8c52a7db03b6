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

/// Runs `task` on the chosen device, or says why it cannot.
pub fn dispatch<T: BackendTask>(choice: DeviceChoice, task: T) -> Result<T::Output, ModelError> {
    let choice = match choice {
        DeviceChoice::Auto if cfg!(feature = "cuda") => DeviceChoice::Cuda,
        DeviceChoice::Auto => DeviceChoice::Cpu,
        other => other,
    };
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
            reason: format!(
                "device `{other}` is not built into this saferc; rebuild with `--features {other}`"
            ),
        }),
    }
}
