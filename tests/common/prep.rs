//! Helpers of the input-preparation tests (expand, slot mapping, windows, staged writes, pad to
//! a length or bucket, the fused step): the backends, settling, reading back, launch counts.
#![allow(dead_code)]

use cpugpu::{BackendKind, Device, DeviceBuffer, Element};

/// The host backend, plus [`Device::auto`] when it is a GPU (with `--features emulator`, always:
/// the emulated GPU). A missing GPU is a failure in an emulator build, and in a `cuda` build with
/// `CPUGPU_REQUIRE_GPU=1`.
pub fn backends() -> Vec<Device> {
    let mut all = vec![Device::host()];
    let auto = Device::auto();
    if auto.kind() != BackendKind::Host {
        all.push(auto);
    } else if cfg!(feature = "emulator")
        || (cfg!(feature = "cuda") && std::env::var("CPUGPU_REQUIRE_GPU").is_ok_and(|v| v == "1"))
    {
        panic!(
            "no GPU backend: {}",
            auto.fallback_reason().unwrap_or("unknown")
        );
    }
    all
}

/// `r` once `dev`'s work has finished: the call's own error, else the first error the device
/// found in the data (on CUDA, from `synchronize`), else the value.
pub fn settled<T>(dev: &Device, r: cpugpu::Result<T>) -> cpugpu::Result<T> {
    let v = r?;
    dev.synchronize()?;
    Ok(v)
}

/// A buffer's contents.
pub fn read<T: Element>(b: &DeviceBuffer<T>) -> Vec<T> {
    b.to_vec().unwrap()
}

/// Uploads `data` with `shape`.
pub fn up<T: Element>(dev: &Device, data: &[T], shape: &[usize]) -> DeviceBuffer<T> {
    dev.upload(data, shape).unwrap()
}

/// The kernels this thread launched since the last call (empty on a build without the emulated
/// GPU, where launches cannot be counted).
pub fn launches() -> Vec<&'static str> {
    #[cfg(feature = "emulator")]
    return cpugpu::emu::take_launch_log();
    #[cfg(not(feature = "emulator"))]
    Vec::new()
}

/// Asserts that the message of `e` starts with the operation's name and quotes `[position]`.
#[track_caller]
pub fn assert_names(e: &cpugpu::Error, op: cpugpu::Op, position: Option<usize>) {
    let msg = e.to_string();
    assert_eq!(e.op(), op, "{msg}");
    assert!(msg.starts_with(&format!("{}: ", op.name())), "{msg}");
    if let Some(p) = position {
        assert!(msg.contains(&format!("[{p}]")), "{msg}");
    }
}
