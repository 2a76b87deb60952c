//! Host prefix-sum offsets: n lengths to n + 1 offsets starting at 0.
use crate::{Index, Offset, Result};

/// `offsets[0] = 0`, `offsets[i + 1] = offsets[i] + lengths[i]`.
pub fn prefix_sum_offsets<L: Index, O: Offset>(lengths: &[L]) -> Result<Vec<O>> {
    let _ = lengths;
    todo!()
}

/// Allocation-free form: `offsets` must hold exactly `lengths.len() + 1` elements.
pub fn prefix_sum_offsets_into<L: Index, O: Offset>(
    lengths: &[L],
    offsets: &mut [O],
) -> Result<()> {
    let _ = (lengths, offsets);
    todo!()
}
