//! Pad to a length or a bucket on CUDA: the pad-to-multiple launch (`pad_w<V>` copies each row
//! and fills its tail, whatever the padded length).

use crate::element::Element;
use crate::error::{Error, Op, Result};
use crate::memory::{DeviceView, DeviceViewMut};
use crate::shape::Shape;
use crate::Device;

/// Pads `src` along `axis` to `padded` (checked: `dst` has that shape, `axis` exists, the axis
/// is not shorter).
pub(crate) fn pad_into<T: Element>(
    dev: &Device,
    op: Op,
    src: DeviceView<'_, T>,
    axis: usize,
    padded: Shape,
    fill: T,
    dst: DeviceViewMut<'_, T>,
) -> Result<()> {
    let s = src.shape();
    if axis >= s.ndim() {
        return Err(Error::AxisOutOfRange {
            op,
            axis,
            ndim: s.ndim(),
        });
    }
    crate::ops::pad::launch::pad_rows(dev, op, src, &s, &padded, axis, fill, dst)
}
