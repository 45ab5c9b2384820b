//! The kernel table: one set of kernel entry points per instruction set, chosen once per process from
//! the CPU's features (or forced with `EFFNET_ISA`), after the pattern of tract's `linalg` ops table.
//!
//! Everything that depends on an instruction set lives in a module compiled only for its architecture
//! (`avx512` and `avx2` on x86-64, `neon` on aarch64) plus `portable`, which builds everywhere. Each
//! fills a table of kernels with the same generic kernel bodies (written against a `Simd` block type, or
//! plain loops the compiler vectorises) compiled for its features, or its own hand-written kernels where
//! those are faster. Call sites go through the table and never name an instruction set; the element
//! type is part of the table too, so reduced-precision kernels join it as new entries rather than new
//! call sites.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
pub(crate) mod portable;

use crate::error::{EngineError, Result};
use crate::feature_map::MapView;
use crate::geometry::Geometry;
use crate::layers::PreparedConv;
use crate::panels::{Dest, Epilogue, InputLayout, PanelRows};
use effnet_arch::variant::Activation;
use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

/// An instruction set the engine has kernels for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// x86-64 with AVX-512 F and DQ.
    Avx512,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// aarch64 with NEON (Advanced SIMD, part of every aarch64 CPU).
    Neon,
    /// Plain Rust for the target's baseline features, on any architecture.
    Portable,
}

impl Isa {
    /// Every instruction set, fastest first.
    pub const ALL: [Isa; 4] = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Portable];

    /// The name `EFFNET_ISA` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Neon => "neon",
            Isa::Portable => "portable",
        }
    }

    /// The instruction set called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.name() == name)
    }

    /// The instruction sets this build and this CPU can run, fastest first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.table().is_some())
            .collect()
    }

    /// This instruction set's kernels, if this build has them and the CPU runs them.
    fn table(self) -> Option<&'static Kernels> {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if avx512::detected() => Some(&avx512::KERNELS),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 if avx2::detected() => Some(&avx2::KERNELS),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => Some(&neon::KERNELS),
            Isa::Portable => Some(&portable::KERNELS),
            _ => None,
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The environment variable that forces an instruction set.
pub const ISA_VARIABLE: &str = "EFFNET_ISA";

/// The instruction set `forced` names (the value of `EFFNET_ISA`), or the fastest this CPU runs when
/// `None` or empty; an error, naming the ones it does run, when the forced one is unknown or unavailable.
pub fn choose(forced: Option<&str>) -> Result<Isa> {
    let available = Isa::available();
    let Some(name) = forced.map(str::trim).filter(|name| !name.is_empty()) else {
        return Ok(available[0]);
    };
    match Isa::from_name(name) {
        Some(isa) if available.contains(&isa) => Ok(isa),
        found => {
            let names: Vec<&str> = available.iter().map(|isa| isa.name()).collect();
            let what = if found.is_some() {
                "is not supported by this CPU or build"
            } else {
                "is not an instruction set effnet knows"
            };
            Err(EngineError::Isa(format!(
                "{ISA_VARIABLE}={name} {what}; this machine runs: {}",
                names.join(", ")
            )))
        }
    }
}

/// The instruction set this process runs: chosen once, from `EFFNET_ISA` or the CPU's features.
pub fn active() -> Result<Isa> {
    static ACTIVE: OnceLock<std::result::Result<Isa, String>> = OnceLock::new();
    ACTIVE
        .get_or_init(|| {
            let forced = std::env::var(ISA_VARIABLE).ok();
            choose(forced.as_deref()).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(EngineError::Isa)
}

/// The kernel tables of every instruction set this machine runs, fastest first (each is tested against
/// the same references).
#[cfg(test)]
pub(crate) fn tables() -> Vec<(Isa, &'static Kernels)> {
    Isa::available()
        .into_iter()
        .filter_map(|isa| Some((isa, isa.table()?)))
        .collect()
}

/// The kernel table of the [`active`] instruction set. Where `EFFNET_ISA` names one this machine cannot
/// run, a warning says so and the fastest it runs is used (the `effnet` binary checks [`active`] first and
/// stops with that error instead).
pub(crate) fn kernels() -> &'static Kernels {
    static KERNELS: OnceLock<&'static Kernels> = OnceLock::new();
    KERNELS.get_or_init(|| {
        let isa = active().unwrap_or_else(|e| {
            let fastest = Isa::available()[0];
            eprintln!("effnet: warning: {e}; running the {fastest} kernels");
            fastest
        });
        isa.table()
            .expect("an available instruction set has a table")
    })
}

/// A dense layer on a vector: input, `(weights, row stride)`, bias, activation.
pub(crate) type DenseVector = fn(&[f32], (&[f32], usize), &[f32], Option<Activation>) -> Vec<f32>;

/// The kernels of one instruction set. The function pointers are safe to call: a table is only handed
/// out ([`kernels`], [`Isa::available`]) where the CPU runs its instruction set.
pub(crate) struct Kernels {
    /// `dest = act(x * w + bias) + residual` for `m` pixels whose inputs start at `x` and are laid out as
    /// the layout says, for the output channels of a range of panels. Unsafe for its pointers: see
    /// [`crate::panels::gemm()`].
    pub gemm: unsafe fn(*const f32, usize, InputLayout, PanelRows, Epilogue, Dest, Range<usize>),
    /// Output rows of a depthwise convolution: see [`crate::depthwise::depthwise_rows`].
    pub depthwise_rows: fn(&MapView, &PreparedConv, Geometry, usize, &mut [f32]),
    /// Per-channel sums: see [`crate::reduce::channel_sums`].
    pub channel_sums: fn(&[f32], usize) -> Vec<f64>,
    /// A dense layer on a vector: see [`crate::vector::dense_vector`].
    pub dense_vector: DenseVector,
    /// Per-channel scale of every pixel: see [`crate::vector::scale_rows`].
    pub scale_rows: fn(&mut [f32], &[f32]),
}

/// Sixteen f32 values in the registers of one instruction set: the block that the generic GEMM tile and
/// depthwise kernels are written against. All methods are `#[inline(always)]` in every implementation,
/// so they compile into the (feature-enabled) kernel that calls them.
pub(crate) trait Simd {
    /// Sixteen f32 lanes (one or more registers).
    type Block: Copy;
    /// Whether the register file holds two channel blocks of depthwise accumulators.
    const WIDE: bool;
    /// Whether the instruction set has fused multiply-add (scalar code may then use `f32::mul_add`,
    /// which would otherwise be a slow library call).
    const FMA: bool;

    /// Loads 16 values from `p` (no alignment needed).
    ///
    /// # Safety
    /// `p` must address 16 readable floats, and the instruction set must be available.
    unsafe fn load(p: *const f32) -> Self::Block;

    /// Stores 16 values to `p` (no alignment needed).
    ///
    /// # Safety
    /// `p` must address 16 writable floats, and the instruction set must be available.
    unsafe fn store(p: *mut f32, v: Self::Block);

    /// `a * b + acc`, lane by lane.
    ///
    /// # Safety
    /// The instruction set must be available.
    unsafe fn mul_add(a: Self::Block, b: Self::Block, acc: Self::Block) -> Self::Block;

    /// `a * b + acc` for a scalar `a` (broadcast to every lane).
    ///
    /// # Safety
    /// The instruction set must be available.
    unsafe fn mul_add_scalar(a: f32, b: Self::Block, acc: Self::Block) -> Self::Block;

    /// `a + b`, lane by lane.
    ///
    /// # Safety
    /// The instruction set must be available.
    unsafe fn add(a: Self::Block, b: Self::Block) -> Self::Block;

    /// `activation` on every lane, in registers (see [`crate::activation::activate_lanes`]).
    ///
    /// # Safety
    /// The instruction set must be available.
    unsafe fn activate(activation: Option<Activation>, v: Self::Block) -> Self::Block;

    /// Asks for the cache line at `p` ahead of its use, where the instruction set has a prefetch (the
    /// address is only formed, never read, so it may lie past the end of a buffer).
    ///
    /// # Safety
    /// The instruction set must be available.
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        let _ = p;
    }
}

/// Defines, in an instruction set's module, the kernels of the table compiled for its features (the
/// attributes given last, e.g. `#[target_feature(enable = "avx2,fma")]`) and the table `KERNELS`: the
/// GEMM with tile kernel `$tile`, the depthwise rows with the blocks of register type `$simd` and row
/// kernel `$span`, and the vectorised loops of [`crate::reduce`] and [`crate::vector`].
macro_rules! kernel_table {
    (tile: $tile:ty, simd: $simd:ty, span: $span:ty $(, #[$feature:meta])*) => {
        /// The GEMM of the table.
        ///
        /// # Safety
        /// The instruction set must be available, and the contract of [`crate::panels::gemm()`] hold.
        $(#[$feature])*
        unsafe fn gemm(
            x: *const f32,
            m: usize,
            layout: $crate::panels::InputLayout,
            w: $crate::panels::PanelRows,
            epilogue: $crate::panels::Epilogue,
            dest: $crate::panels::Dest,
            panels: std::ops::Range<usize>,
        ) {
            // SAFETY: forwarded.
            unsafe {
                $crate::tile::gemm_laid_out::<$tile>(x, m, layout, w, epilogue, dest, panels)
            }
        }

        /// The depthwise rows of the table.
        ///
        /// # Safety
        /// The instruction set must be available.
        $(#[$feature])*
        unsafe fn depthwise_rows(
            x: &$crate::feature_map::MapView,
            c: &$crate::layers::PreparedConv,
            g: $crate::geometry::Geometry,
            first_row: usize,
            out: &mut [f32],
        ) {
            // SAFETY: forwarded.
            unsafe {
                $crate::depthwise::depthwise_rows_with::<$simd, $span>(x, c, g, first_row, out)
            }
        }

        /// The channel sums of the table.
        ///
        /// # Safety
        /// The instruction set must be available.
        $(#[$feature])*
        unsafe fn channel_sums(pixels: &[f32], channels: usize) -> Vec<f64> {
            $crate::reduce::channel_sums_body(pixels, channels)
        }

        /// The dense vector layer of the table.
        ///
        /// # Safety
        /// The instruction set must be available.
        $(#[$feature])*
        unsafe fn dense_vector(
            input: &[f32],
            weight: (&[f32], usize),
            bias: &[f32],
            activation: Option<effnet_arch::variant::Activation>,
        ) -> Vec<f32> {
            $crate::vector::dense_vector_body(input, weight, bias, activation)
        }

        /// The channel scale of the table.
        ///
        /// # Safety
        /// The instruction set must be available.
        $(#[$feature])*
        unsafe fn scale_rows(rows: &mut [f32], gate: &[f32]) {
            $crate::vector::scale_rows_body(rows, gate)
        }

        /// This instruction set's kernels. The closures' calls are sound because the table is only handed
        /// out where the CPU runs the instruction set (see [`crate::isa::Kernels`]).
        pub(crate) static KERNELS: $crate::isa::Kernels = $crate::isa::Kernels {
            gemm,
            // SAFETY (each closure): the instruction set is available wherever the table is used.
            depthwise_rows: |x, c, g, first_row, out| unsafe {
                depthwise_rows(x, c, g, first_row, out)
            },
            channel_sums: |pixels, channels| unsafe { channel_sums(pixels, channels) },
            dense_vector: |input, weight, bias, activation| unsafe {
                dense_vector(input, weight, bias, activation)
            },
            scale_rows: |rows, gate| unsafe { scale_rows(rows, gate) },
        };
    };
}
pub(crate) use kernel_table;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feature_map::FeatureMap;
    use crate::geometry::geometry_of;
    use crate::test_support::{activate as act, values};
    use effnet_arch::Padding;

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: size");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = (f64::from(g) - w).abs();
            assert!(err <= 1e-5 * (1.0 + w.abs()), "{what}: [{i}] {g} vs {w}");
        }
    }

    #[test]
    fn the_forced_instruction_set_is_chosen_or_refused_by_name() {
        let available = Isa::available();
        assert_eq!(
            available.last(),
            Some(&Isa::Portable),
            "portable runs everywhere"
        );
        assert_eq!(choose(None).unwrap(), available[0]);
        assert_eq!(choose(Some(" ")).unwrap(), available[0]);
        for isa in &available {
            assert_eq!(choose(Some(isa.name())).unwrap(), *isa);
        }
        let unknown = choose(Some("sse9")).unwrap_err().to_string();
        assert!(
            unknown.contains("EFFNET_ISA=sse9") && unknown.contains("portable"),
            "{unknown}"
        );
        for isa in Isa::ALL.into_iter().filter(|isa| !available.contains(isa)) {
            let refused = choose(Some(isa.name())).unwrap_err().to_string();
            assert!(
                refused.contains("not supported") && refused.contains("portable"),
                "{refused}"
            );
        }
    }

    /// The depthwise rows of every table against an f64 reference: 3 x 3 and 5 x 5, stride 1 and 2, both
    /// paddings, maps wide enough for interior spans and narrow ones, and channel counts that leave a
    /// pair, a single block and a scalar tail.
    #[test]
    fn every_table_computes_depthwise_rows_as_the_reference() {
        for (size, ch) in [(13, 56), (24, 40), (5, 3), (9, 16)] {
            for (k, s) in [(3, 1), (3, 2), (5, 1), (5, 2)] {
                for padding in [Padding::TfSame, Padding::Symmetric] {
                    let x = FeatureMap::new(&values(size * size * ch, k + s), size, size, ch);
                    let c = PreparedConv::depthwise(
                        ch,
                        (k, s),
                        values(k * k * ch, 3),
                        values(ch, 4),
                        Some(Activation::Swish),
                    );
                    let g = geometry_of(size, size, &c, padding);
                    let weight = c.weight();
                    let mut want = Vec::new();
                    for oy in 0..g.out_h {
                        for ox in 0..g.out_w {
                            for o in 0..ch {
                                let mut acc = f64::from(c.bias[o]);
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let iy = (oy * s + ky) as isize - g.pad_top as isize;
                                        let ix = (ox * s + kx) as isize - g.pad_left as isize;
                                        if (0..size as isize).contains(&iy)
                                            && (0..size as isize).contains(&ix)
                                        {
                                            let at = (iy as usize * size + ix as usize) * ch + o;
                                            acc += f64::from(x.data[at])
                                                * f64::from(weight[(ky * k + kx) * ch + o]);
                                        }
                                    }
                                }
                                want.push(act(c.activation, acc));
                            }
                        }
                    }
                    for (isa, table) in tables() {
                        let mut out = vec![0f32; g.out_h * g.out_w * ch];
                        (table.depthwise_rows)(&x.view(), &c, g, 0, &mut out);
                        let what = format!("{isa} {size}x{size}x{ch} k{k} s{s} {padding:?}");
                        assert_close(&out, &want, &what);
                    }
                }
            }
        }
    }

    /// Channel sums, the dense vector layer (whole matrix and a column range) and the channel scale of
    /// every table against f64 references.
    #[test]
    fn every_table_computes_the_vector_kernels_as_the_reference() {
        let (pixels, ch) = (150, 21);
        let x = values(pixels * ch, 1);
        let sums: Vec<f64> = (0..ch)
            .map(|c| (0..pixels).map(|p| f64::from(x[p * ch + c])).sum())
            .collect();
        let (inputs, outputs, first) = (37, 13, 5);
        let (input, weight, bias) = (values(inputs, 2), values(inputs * outputs, 3), values(8, 4));
        let dense: Vec<f64> = (0..8)
            .map(|o| {
                let dot: f64 = (0..inputs)
                    .map(|i| f64::from(input[i]) * f64::from(weight[i * outputs + first + o]))
                    .sum();
                act(Some(Activation::Sigmoid), dot + f64::from(bias[o]))
            })
            .collect();
        let gate = values(ch, 5);
        let scaled: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| f64::from(v) * f64::from(gate[i % ch]))
            .collect();
        for (isa, table) in tables() {
            let got: Vec<f32> = (table.channel_sums)(&x, ch)
                .into_iter()
                .map(|s| s as f32)
                .collect();
            assert_close(&got, &sums, &format!("{isa} channel sums"));
            let columns = (&weight[first..], outputs);
            let got = (table.dense_vector)(&input, columns, &bias, Some(Activation::Sigmoid));
            assert_close(&got, &dense, &format!("{isa} dense vector"));
            let mut rows = x.clone();
            (table.scale_rows)(&mut rows, &gate);
            assert_close(&rows, &scaled, &format!("{isa} scale rows"));
        }
    }
}
