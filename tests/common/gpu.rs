//! The six operations on the emulated GPU through `Device`, with the host-slice signatures of
//! `cpugpu::host`, so a test can run one case both ways and compare.
//!
//! Each input and output is uploaded to device memory at the same alignment modulo 16 bytes as
//! the host slice it comes from (a slice one element into a buffer stays misaligned), so the
//! launch code picks the same access width a GPU would for the same views. Outputs are read back
//! after `Device::synchronize`, which is also where errors the kernels find come back; the first
//! error of the call or of the synchronisation is returned.
#![allow(dead_code)]

use cpugpu::{
    Device, DeviceBuffer, DeviceView, DeviceViewMut, Element, GatherPolicy, Index, Offset, Result,
    ScatterPolicy, Shape,
};

/// The emulated GPU, one handle per test thread.
pub fn dev() -> Device {
    thread_local! {
        static DEV: Device = Device::cuda(0).expect("the emulated GPU (build with --features emulator)");
    }
    DEV.with(|d| d.clone())
}

/// Device memory holding a copy of a host slice at the slice's alignment modulo 16.
pub struct Up<T> {
    _bytes: DeviceBuffer<u8>,
    ptr: u64,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: Element> Up<T> {
    pub fn new(dev: &Device, data: &[T]) -> Up<T> {
        let pad = data.as_ptr() as usize % 16;
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let mut all = vec![0xEEu8; pad + bytes.len()];
        all[pad..].copy_from_slice(bytes);
        let buf = dev.upload(&all, &[all.len()]).unwrap();
        // Device allocations are at least 256-byte aligned, so base + pad has the host slice's
        // address modulo 16.
        let ptr = buf.view().cuda_ptr().unwrap() + pad as u64;
        Up {
            _bytes: buf,
            ptr,
            len: data.len(),
            _t: std::marker::PhantomData,
        }
    }

    /// The memory with `shape`, or as a vector when `shape` does not hold exactly its elements
    /// (a view always has its memory's length; the operation then reports the mismatch).
    fn shape_or_vector(&self, shape: &[usize]) -> Vec<usize> {
        let fits = shape.len() <= Shape::MAX_DIMS
            && shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .is_some_and(|n| n == self.len);
        if fits {
            shape.to_vec()
        } else {
            vec![self.len]
        }
    }

    pub fn view<'a>(&'a self, dev: &'a Device, shape: &[usize]) -> DeviceView<'a, T> {
        let shape = self.shape_or_vector(shape);
        // SAFETY: ptr is inside our live allocation, aligned for T (the host slice's address
        // modulo 16 is a multiple of align_of::<T>() <= 16) and holds len elements.
        unsafe { DeviceView::from_raw_cuda(dev, self.ptr, &shape) }.unwrap()
    }

    pub fn view_mut<'a>(&'a mut self, dev: &'a Device, shape: &[usize]) -> DeviceViewMut<'a, T> {
        let shape = self.shape_or_vector(shape);
        // SAFETY: as in `view`; `&mut self` makes it the only view of the memory.
        unsafe { DeviceViewMut::from_raw_cuda(dev, self.ptr, &shape) }.unwrap()
    }

    pub fn read(&self, dev: &Device, out: &mut [T]) {
        self.view(dev, &[self.len]).copy_to_host(out).unwrap();
    }
}

/// The call's own error, else the first error of the synchronisation.
fn settled<R>(dev: &Device, r: Result<R>) -> Result<R> {
    let v = r?;
    dev.synchronize()?;
    Ok(v)
}

fn rows_shape(src_shape: &[usize], rows: usize) -> Vec<usize> {
    let mut s = src_shape.to_vec();
    if s.is_empty() {
        s.push(rows);
    } else {
        s[0] = rows;
    }
    s
}

pub fn gather_rows_into<T: Element, I: Index>(
    src: &[T],
    src_shape: &[usize],
    indices: &[I],
    dst: &mut [T],
    policy: GatherPolicy<T>,
) -> Result<()> {
    let d = dev();
    let s = Up::new(&d, src);
    let i = Up::new(&d, indices);
    let mut o = Up::new(&d, dst);
    let dst_shape = rows_shape(src_shape, indices.len());
    let r = d.gather_rows_into(
        s.view(&d, src_shape),
        i.view(&d, &[indices.len()]),
        o.view_mut(&d, &dst_shape),
        policy,
    );
    let r = settled(&d, r);
    o.read(&d, dst);
    r
}

pub fn scatter_rows_into<T: Element, I: Index>(
    src: &[T],
    indices: &[I],
    dst: &mut [T],
    dst_shape: &[usize],
    policy: ScatterPolicy,
) -> Result<()> {
    let d = dev();
    let s = Up::new(&d, src);
    let i = Up::new(&d, indices);
    let mut o = Up::new(&d, dst);
    let src_shape = rows_shape(dst_shape, indices.len());
    let r = d.scatter_rows_into(
        s.view(&d, &src_shape),
        i.view(&d, &[indices.len()]),
        o.view_mut(&d, dst_shape),
        policy,
    );
    let r = settled(&d, r);
    o.read(&d, dst);
    r
}

/// Pads on the device into `dst` (whose length must be the padded size); returns the padded
/// shape.
pub fn pad_to_multiple_into<T: Element>(
    src: &[T],
    shape: &[usize],
    axis: usize,
    multiple: usize,
    fill: T,
    dst: &mut [T],
) -> Result<Shape> {
    let d = dev();
    let s = Up::new(&d, src);
    let mut o = Up::new(&d, dst);
    let sv = s.view(&d, shape);
    // The destination's shape, where the arguments make one (else the device reports why).
    let padded: Vec<usize> = cpugpu::host::pad_to_multiple(src, shape, axis, multiple, fill)
        .map(|p| p.shape.dims().to_vec())
        .unwrap_or_else(|_| vec![dst.len()]);
    let r = d.pad_to_multiple_into(sv, axis, multiple, fill, o.view_mut(&d, &padded));
    let r = settled(&d, r);
    o.read(&d, dst);
    r.map(|()| Shape::new(&padded).expect("a valid shape"))
}

pub fn prefix_sum_offsets_into<L: Index, O: Offset>(
    lengths: &[L],
    offsets: &mut [O],
) -> Result<()> {
    let d = dev();
    let l = Up::new(&d, lengths);
    let mut o = Up::new(&d, offsets);
    let n = offsets.len();
    let r = d.prefix_sum_offsets_into(l.view(&d, &[lengths.len()]), o.view_mut(&d, &[n]));
    let r = settled(&d, r);
    o.read(&d, offsets);
    r
}

pub fn flatten_into<T: Element, O: Offset, S: AsRef<[T]>>(
    arrays: &[S],
    dst: &mut [T],
    offsets: &mut [O],
) -> Result<()> {
    let arrays: Vec<&[T]> = arrays.iter().map(AsRef::as_ref).collect(); // each slice once
    let d = dev();
    let ups: Vec<Up<T>> = arrays.iter().map(|a| Up::new(&d, a)).collect();
    let views: Vec<DeviceView<'_, T>> = ups
        .iter()
        .zip(&arrays)
        .map(|(u, a)| u.view(&d, &[a.len()]))
        .collect();
    let mut o = Up::new(&d, dst);
    let mut off = Up::new(&d, offsets);
    let (n, m) = (dst.len(), offsets.len());
    let r = d.flatten_into(&views, o.view_mut(&d, &[n]), off.view_mut(&d, &[m]));
    let r = settled(&d, r);
    o.read(&d, dst);
    off.read(&d, offsets);
    r
}

pub fn split_copy_into<T: Element, O: Offset>(
    data: &[T],
    offsets: &[O],
    outs: &mut [&mut [T]],
) -> Result<()> {
    let d = dev();
    let s = Up::new(&d, data);
    let mut ups: Vec<Up<T>> = outs.iter().map(|o| Up::new(&d, o)).collect();
    let lens: Vec<usize> = outs.iter().map(|o| o.len()).collect();
    let mut views: Vec<DeviceViewMut<'_, T>> = ups
        .iter_mut()
        .zip(&lens)
        .map(|(u, &l)| u.view_mut(&d, &[l]))
        .collect();
    let r = d.split_copy_into(s.view(&d, &[data.len()]), offsets, &mut views);
    drop(views);
    let r = settled(&d, r);
    for (u, o) in ups.iter().zip(outs.iter_mut()) {
        u.read(&d, o);
    }
    r
}

pub fn gather_rows<T: Element, I: Index>(
    src: &[T],
    src_shape: &[usize],
    indices: &[I],
    policy: GatherPolicy<T>,
) -> Result<Vec<T>> {
    let d = dev();
    let s = Up::new(&d, src);
    let i = Up::new(&d, indices);
    let out = settled(
        &d,
        d.gather_rows(s.view(&d, src_shape), i.view(&d, &[indices.len()]), policy),
    )?;
    out.to_vec()
}

pub fn prefix_sum_offsets<L: Index, O: Offset>(lengths: &[L]) -> Result<Vec<O>> {
    let d = dev();
    let l = Up::new(&d, lengths);
    let out = settled(
        &d,
        d.prefix_sum_offsets::<L, O>(l.view(&d, &[lengths.len()])),
    )?;
    out.to_vec()
}

pub fn flatten<T: Element, O: Offset, S: AsRef<[T]>>(arrays: &[S]) -> Result<(Vec<T>, Vec<O>)> {
    let arrays: Vec<&[T]> = arrays.iter().map(AsRef::as_ref).collect(); // each slice once
    let d = dev();
    let ups: Vec<Up<T>> = arrays.iter().map(|a| Up::new(&d, a)).collect();
    let views: Vec<DeviceView<'_, T>> = ups
        .iter()
        .zip(&arrays)
        .map(|(u, a)| u.view(&d, &[a.len()]))
        .collect();
    let (flat, offs) = settled(&d, d.flatten::<T, O>(&views))?;
    Ok((flat.to_vec()?, offs.to_vec()?))
}

/// The allocating pad: (whether the input came back unchanged, the data, the shape).
pub fn pad_to_multiple<T: Element>(
    src: &[T],
    shape: &[usize],
    axis: usize,
    multiple: usize,
    fill: T,
) -> Result<(bool, Vec<T>, Shape)> {
    let d = dev();
    let s = Up::new(&d, src);
    let p = settled(
        &d,
        d.pad_to_multiple(s.view(&d, shape), axis, multiple, fill),
    )?;
    let unchanged = matches!(p, cpugpu::DevicePadded::Unchanged(_));
    let v = p.view();
    let mut out = vec![T::zeroed(); v.len()];
    v.copy_to_host(&mut out)?;
    Ok((unchanged, out, v.shape()))
}

/// The zero-copy split, read back: each segment's contents.
pub fn split<T: Element, O: Offset>(data: &[T], offsets: &[O]) -> Result<Vec<Vec<T>>> {
    let d = dev();
    let s = Up::new(&d, data);
    let mut parts = Vec::new();
    d.split_into(s.view(&d, &[data.len()]), offsets, &mut parts)?;
    parts
        .iter()
        .map(|p| {
            let mut v = vec![T::zeroed(); p.len()];
            p.copy_to_host(&mut v).map(|()| v)
        })
        .collect()
}
