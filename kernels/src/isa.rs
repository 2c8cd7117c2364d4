//! The instruction set the kernels may use on this machine: detected once per process
//! ([`Isa::host`]), and capped by the `EDGE_ISA` environment variable so that the kernels of a
//! lower level can be run and measured on a machine that has more (`EDGE_ISA=avx2` on an
//! AVX-512 server runs what an Atom gateway would; `EDGE_ISA=scalar` runs the plain Rust
//! references everywhere).

use std::fmt;
use std::sync::OnceLock;

/// One instruction-set extension some kernel needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// x86-64: AVX2 with FMA.
    Avx2Fma,
    /// x86-64: AVX-512 F, BW and VL.
    Avx512,
    /// x86-64: AVX-512 VNNI (`vpdpbusd`: u8 × i8 summed into i32).
    Avx512Vnni,
    /// x86-64: AVX-512 VBMI (`vpermb`: byte permutes).
    Avx512Vbmi,
    /// x86-64: AVX-VNNI (`vpdpbusd` on 256 bits, VEX encoded; Alder Lake, Gracemont N-series,
    /// Sapphire Rapids and later).
    AvxVnni,
    /// aarch64: Advanced SIMD (NEON).
    Neon,
    /// aarch64: Armv8.2 dot product (`sdot`/`udot`: four i8 products summed into i32;
    /// Cortex-A76/A78, Raspberry Pi 5, Jetson Orin).
    Dotprod,
    /// aarch64: Armv8.6 int8 matrix multiply (`usdot`: u8 × i8, `smmla`/`usmmla`; Cortex-A710
    /// and later, Neoverse N2/V).
    I8mm,
}

impl Feature {
    const ALL: [Feature; 8] = [
        Feature::Avx2Fma,
        Feature::Avx512,
        Feature::Avx512Vnni,
        Feature::Avx512Vbmi,
        Feature::AvxVnni,
        Feature::Neon,
        Feature::Dotprod,
        Feature::I8mm,
    ];

    const fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The name `Isa`'s display uses.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Avx2Fma => "avx2+fma",
            Feature::Avx512 => "avx512",
            Feature::Avx512Vnni => "avx512-vnni",
            Feature::Avx512Vbmi => "avx512-vbmi",
            Feature::AvxVnni => "avx-vnni",
            Feature::Neon => "neon",
            Feature::Dotprod => "dotprod",
            Feature::I8mm => "i8mm",
        }
    }
}

/// A level `EDGE_ISA` may name: the features it allows, lowest level first.
#[cfg(target_arch = "x86_64")]
const LEVELS: &[(&str, &[Feature])] = &[
    ("scalar", &[]),
    ("avx2", &[Feature::Avx2Fma]),
    ("avx-vnni", &[Feature::Avx2Fma, Feature::AvxVnni]),
    (
        "avx512",
        &[Feature::Avx2Fma, Feature::AvxVnni, Feature::Avx512],
    ),
    (
        "avx512-vnni",
        &[
            Feature::Avx2Fma,
            Feature::AvxVnni,
            Feature::Avx512,
            Feature::Avx512Vnni,
            Feature::Avx512Vbmi,
        ],
    ),
];
#[cfg(target_arch = "aarch64")]
const LEVELS: &[(&str, &[Feature])] = &[
    ("scalar", &[]),
    ("neon", &[Feature::Neon]),
    ("dotprod", &[Feature::Neon, Feature::Dotprod]),
    ("i8mm", &[Feature::Neon, Feature::Dotprod, Feature::I8mm]),
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const LEVELS: &[(&str, &[Feature])] = &[("scalar", &[])];

/// The set of features the kernels may use. A kernel variant is chosen from it when an op is
/// built, never per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Isa {
    features: u8,
}

/// What [`Isa::host`] found, once per process.
struct Host {
    isa: Isa,
    /// `EDGE_ISA`'s effect, for people: the cap applied, or why it was ignored.
    note: Option<String>,
}

impl Isa {
    /// No extension: the plain Rust kernels (every target has them).
    pub const fn scalar() -> Isa {
        Isa { features: 0 }
    }

    /// What this CPU has, capped by `EDGE_ISA` when it names a level (see [`Isa::levels`]);
    /// detected on the first call, the same answer afterwards.
    pub fn host() -> Isa {
        host().isa
    }

    /// `EDGE_ISA`'s effect on [`Isa::host`]: `None` when it is not set, else the cap applied
    /// or why the value was ignored (an unknown level name).
    pub fn host_note() -> Option<&'static str> {
        host().note.as_deref()
    }

    /// What this CPU has, uncapped (asks the CPU each call).
    pub fn detected() -> Isa {
        let mut isa = Isa::scalar();
        for f in Feature::ALL {
            if cpu_has(f) {
                isa.features |= f.bit();
            }
        }
        isa
    }

    /// Whether kernels may use `feature`.
    pub fn has(self, feature: Feature) -> bool {
        self.features & feature.bit() != 0
    }

    /// Whether kernels may use every feature of `features`.
    pub fn has_all(self, features: &[Feature]) -> bool {
        features.iter().all(|&f| self.has(f))
    }

    /// This set without what the level `name` does not allow; `Err` lists the levels there are.
    pub fn capped(self, name: &str) -> Result<Isa, String> {
        let name = name.trim().to_ascii_lowercase();
        let Some((_, allowed)) = LEVELS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = LEVELS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "unknown instruction-set level '{name}' (this build knows: {})",
                names.join(", ")
            ));
        };
        let mask = allowed.iter().fold(0, |m, f| m | f.bit());
        Ok(Isa {
            features: self.features & mask,
        })
    }

    /// This set capped at every level name, lowest first, each once: the instruction sets
    /// this machine can run, for tests that hold every kernel to its scalar version.
    pub fn levels(self) -> Vec<Isa> {
        let mut all: Vec<Isa> = Vec::new();
        for (name, _) in LEVELS {
            let isa = self.capped(name).expect("a known level");
            if !all.contains(&isa) {
                all.push(isa);
            }
        }
        all
    }
}

impl fmt::Display for Isa {
    /// `scalar`, or the features, lowest first (`avx2+fma avx512 avx512-vnni avx512-vbmi`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Feature::ALL
            .iter()
            .filter(|&&x| self.has(x))
            .map(|x| x.name())
            .collect();
        if names.is_empty() {
            f.write_str("scalar")
        } else {
            f.write_str(&names.join(" "))
        }
    }
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let detected = Isa::detected();
        match std::env::var("EDGE_ISA") {
            Err(_) => Host {
                isa: detected,
                note: None,
            },
            Ok(level) => match detected.capped(&level) {
                Ok(isa) => Host {
                    isa,
                    note: Some(format!("EDGE_ISA={} caps the kernels", level.trim())),
                },
                Err(why) => Host {
                    isa: detected,
                    note: Some(format!("EDGE_ISA ignored: {why}")),
                },
            },
        }
    })
}

#[cfg(target_arch = "x86_64")]
fn cpu_has(f: Feature) -> bool {
    use std::arch::is_x86_feature_detected as has;
    match f {
        Feature::Avx2Fma => has!("avx2") && has!("fma"),
        Feature::Avx512 => has!("avx512f") && has!("avx512bw") && has!("avx512vl"),
        Feature::Avx512Vnni => cpu_has(Feature::Avx512) && has!("avx512vnni"),
        Feature::Avx512Vbmi => cpu_has(Feature::Avx512) && has!("avx512vbmi"),
        Feature::AvxVnni => cpu_has(Feature::Avx2Fma) && has!("avxvnni"),
        Feature::Neon | Feature::Dotprod | Feature::I8mm => false,
    }
}

#[cfg(target_arch = "aarch64")]
fn cpu_has(f: Feature) -> bool {
    use std::arch::is_aarch64_feature_detected as has;
    match f {
        Feature::Neon => has!("neon"),
        Feature::Dotprod => has!("neon") && has!("dotprod"),
        Feature::I8mm => has!("neon") && has!("dotprod") && has!("i8mm"),
        _ => false,
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_has(_: Feature) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_nested_and_start_at_scalar() {
        let levels = Isa::detected().levels();
        eprintln!(
            "levels: {}",
            levels
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        );
        assert_eq!(levels[0], Isa::scalar());
        for pair in levels.windows(2) {
            // each level's features include the one below
            assert_eq!(pair[0].features & pair[1].features, pair[0].features);
            assert_ne!(pair[0], pair[1]);
        }
        assert_eq!(*levels.last().unwrap(), Isa::detected());
    }

    #[test]
    fn a_cap_never_adds_a_feature_and_an_unknown_level_is_refused() {
        let detected = Isa::detected();
        for (name, _) in LEVELS {
            let capped = detected.capped(name).unwrap();
            assert_eq!(capped.features & !detected.features, 0, "{name}");
        }
        assert_eq!(detected.capped("scalar").unwrap(), Isa::scalar());
        let err = detected.capped("avx9000").unwrap_err();
        assert!(err.contains("avx9000") && err.contains("scalar"), "{err}");
        assert_eq!(Isa::scalar().to_string(), "scalar");
    }
}
