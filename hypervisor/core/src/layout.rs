//! Where a guest's kernel, device tree and initrd go in its memory,
//! following the arm64 Linux boot protocol (Documentation/arch/arm64/booting.rst).

use crate::sdt::Range;

const MIB2: u64 = 2 << 20;
const IMAGE_MAGIC: u32 = 0x644d_5241; // "ARM\x64"

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestLayout {
    /// Where the kernel is copied, which is also its entry point.
    pub kernel: u64,
    pub dtb: u64,
    pub initrd: Option<Range>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Kernel, initrd and device tree do not fit the first memory range.
    TooBig { need: u64, have: u64 },
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::TooBig { need, have } => {
                write!(f, "kernel, initrd and device tree need {need:#x} bytes; the first memory range has {have:#x}")
            }
        }
    }
}

/// text_offset and image_size from an arm64 Image header; (0, file size) for
/// a plain binary.
pub fn image_extent(kernel: &[u8]) -> (u64, u64) {
    let le = |at: usize| u64::from_le_bytes(kernel[at..at + 8].try_into().unwrap_or([0; 8]));
    if kernel.len() >= 64
        && u32::from_le_bytes([kernel[56], kernel[57], kernel[58], kernel[59]]) == IMAGE_MAGIC
    {
        let size = le(16);
        (
            le(8),
            if size == 0 {
                kernel.len() as u64
            } else {
                size.max(kernel.len() as u64)
            },
        )
    } else {
        (0, kernel.len() as u64)
    }
}

/// Plans the first memory range: the kernel at the first 2 MiB boundary
/// plus its text_offset, the device tree in the top 2 MiB, the initrd just
/// below it.
pub fn plan(
    memory: &Range,
    kernel: &[u8],
    dtb_max: u64,
    initrd_len: Option<u64>,
) -> Result<GuestLayout, LayoutError> {
    let (text_offset, image_size) = image_extent(kernel);
    let base = memory.base.next_multiple_of(MIB2);
    let kernel_at = base.saturating_add(text_offset);
    let kernel_end = kernel_at.saturating_add(image_size);
    let too_big = || LayoutError::TooBig {
        need: (kernel_end - memory.base)
            .saturating_add(MIB2.max(dtb_max))
            .saturating_add(initrd_len.unwrap_or(0)),
        have: memory.size,
    };
    let dtb = memory
        .end()
        .checked_sub(MIB2.max(dtb_max))
        .ok_or_else(too_big)?
        & !(MIB2 - 1);
    let initrd = match initrd_len {
        Some(len) => Some(Range::new(
            dtb.checked_sub(len).ok_or_else(too_big)? & !0xfff,
            len,
        )),
        None => None,
    };
    if initrd.map_or(dtb, |r| r.base) < kernel_end {
        return Err(too_big());
    }
    Ok(GuestLayout {
        kernel: kernel_at,
        dtb,
        initrd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn image(text_offset: u64, size: u64) -> alloc::vec::Vec<u8> {
        let mut k = vec![0u8; 4096];
        k[8..16].copy_from_slice(&text_offset.to_le_bytes());
        k[16..24].copy_from_slice(&size.to_le_bytes());
        k[56..60].copy_from_slice(b"ARM\x64");
        k
    }

    #[test]
    fn linux_image_honours_text_offset_and_size() {
        let m = Range::new(0x5000_0000, 0x2000_0000);
        let l = plan(&m, &image(0, 0x200_0000), 0x10000, Some(0x10_0000)).unwrap();
        assert_eq!(l.kernel, 0x5000_0000);
        assert_eq!(l.dtb, 0x6fe0_0000);
        assert_eq!(l.initrd, Some(Range::new(0x6fd0_0000, 0x10_0000)));
    }

    #[test]
    fn plain_binary_goes_to_the_first_2m_boundary() {
        let m = Range::new(0x4810_0000, 0x1f0_0000);
        let l = plan(&m, &[0u8; 100], 0x1000, None).unwrap();
        assert_eq!(
            (l.kernel, l.dtb, l.initrd),
            (0x4820_0000, 0x49e0_0000, None)
        );
        assert_eq!(image_extent(&image(0x8_0000, 0)), (0x8_0000, 4096));
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let m = Range::new(0x4800_0000, 0x40_0000);
        assert!(matches!(
            plan(&m, &image(0, 0x30_0000), 0x1000, None),
            Err(LayoutError::TooBig { .. })
        ));
        assert!(plan(&m, &image(0, 0x1000), 0x1000, Some(0x80_0000)).is_err());
        assert!(plan(&m, &image(0, 0x1000), 0x1000, Some(u64::MAX)).is_err());
        assert!(plan(&Range::new(0x1000, 0x1000), &[], 0x1000, None).is_err());
    }
}
