//! An emulated MPU-6050 on an in-process I²C bus: the register file the driver talks to, with
//! acceleration from a machine model — healthy, or worn (the signal model `models/vibration`
//! was trained on; keep `models/vibration/make.py` in step) — and faults on demand (NACKs, stuck
//! bytes, an absent or foreign chip). It lets the agent's sensor source, the demo and the tests run
//! the real driver without hardware.
//!
//! Time is the sample clock: each burst read of the data registers is the next sample at the
//! configured output rate, so a window holds exactly what the chip would have produced.

use core::fmt;

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

use crate::mpu6050::{reg, AccelRange};

/// The machine the chip is bolted to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Machine {
    /// Running speed 20..30 Hz at 0.05..0.15 g, noise 0.01 g.
    Healthy,
    /// As healthy plus looseness harmonics at 2× and 3× the running speed and rougher noise.
    Worn,
    /// Healthy until this many seconds of samples, worn afterwards (a bearing going bad).
    WearsAfter(f64),
}

/// A fault the emulated chip or bus shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// None.
    None,
    /// Every n-th transaction is not acknowledged.
    NackEvery(u32),
    /// Every n-th data read returns 0xFF in every byte (a floating bus).
    GarbageEvery(u32),
    /// Nothing answers at the address.
    Absent,
    /// A chip that is not an MPU-6050 answers (WHO_AM_I 0x12).
    Foreign,
}

/// A bus error of the emulated bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimError(pub ErrorKind);

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl embedded_hal::i2c::Error for SimError {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

/// Counter-based random numbers (xorshift64*), so a seed replays the same signal.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }

    fn normal(&mut self, sigma: f64) -> f64 {
        let u1 = self.uniform(f64::MIN_POSITIVE, 1.0);
        let u2 = self.uniform(0.0, 1.0);
        sigma * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// The drawn parameters of one machine.
#[derive(Clone, Debug)]
struct Vibration {
    f0: f64,
    a1: f64,
    phase: [f64; 3],
    harmonics: [(f64, [f64; 3]); 2],
}

const GAIN: [f64; 3] = [1.0, 0.6, 0.3];

impl Vibration {
    fn draw(rng: &mut Rng) -> Vibration {
        let tau = 2.0 * std::f64::consts::PI;
        let mut phases = || [0; 3].map(|_| rng.uniform(0.0, tau));
        let phase = phases();
        let h2 = phases();
        let h3 = phases();
        Vibration {
            f0: rng.uniform(20.0, 30.0),
            a1: rng.uniform(0.05, 0.15),
            phase,
            harmonics: [(rng.uniform(0.08, 0.25), h2), (rng.uniform(0.08, 0.25), h3)],
        }
    }

    fn sample(&self, t: f64, worn: bool, rng: &mut Rng) -> [f64; 3] {
        let tau = 2.0 * std::f64::consts::PI;
        let mut a = [0.0; 3];
        for axis in 0..3 {
            a[axis] = GAIN[axis] * self.a1 * (tau * self.f0 * t + self.phase[axis]).sin();
            if worn {
                for (k, (amp, phase)) in self.harmonics.iter().enumerate() {
                    let harmonic = (k + 2) as f64;
                    a[axis] +=
                        GAIN[axis] * amp * (tau * harmonic * self.f0 * t + phase[axis]).sin();
                }
            }
            a[axis] += rng.normal(if worn { 0.03 } else { 0.01 });
        }
        a[2] += 1.0;
        a
    }
}

/// The emulated chip and its bus. Implements [`embedded_hal::i2c::I2c`].
#[derive(Clone, Debug)]
pub struct SimulatedMpu6050 {
    address: u8,
    registers: [u8; 128],
    pointer: u8,
    machine: Machine,
    fault: Fault,
    vibration: Vibration,
    rng: Rng,
    samples: u64,
    transactions: u64,
    data_reads: u64,
}

impl SimulatedMpu6050 {
    /// A chip at `address` on `machine`, its signal drawn from `seed`. Powers up asleep, as the
    /// real chip does.
    pub fn new(address: u8, machine: Machine, seed: u64) -> SimulatedMpu6050 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let vibration = Vibration::draw(&mut rng);
        let mut chip = SimulatedMpu6050 {
            address,
            registers: [0; 128],
            pointer: 0,
            machine,
            fault: Fault::None,
            vibration,
            rng,
            samples: 0,
            transactions: 0,
            data_reads: 0,
        };
        chip.power_on_reset();
        chip
    }

    /// The same chip with a fault.
    pub fn with_fault(mut self, fault: Fault) -> SimulatedMpu6050 {
        self.fault = fault;
        self.power_on_reset();
        self
    }

    /// Samples produced so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    fn power_on_reset(&mut self) {
        self.registers = [0; 128];
        self.registers[reg::PWR_MGMT_1 as usize] = 0x40; // asleep
        self.registers[reg::WHO_AM_I as usize] = if self.fault == Fault::Foreign {
            0x12
        } else {
            0x68
        };
    }

    fn rate_hz(&self) -> f64 {
        let dlpf = self.registers[reg::CONFIG as usize] & 7;
        let base = if dlpf == 0 || dlpf == 7 {
            8000.0
        } else {
            1000.0
        };
        base / (1.0 + self.registers[reg::SMPLRT_DIV as usize] as f64)
    }

    fn asleep(&self) -> bool {
        self.registers[reg::PWR_MGMT_1 as usize] & 0x40 != 0
    }

    /// Latches the next sample into the data registers (what the chip does at its output rate).
    fn latch_sample(&mut self) {
        let t = self.samples as f64 / self.rate_hz();
        self.samples += 1;
        let worn = match self.machine {
            Machine::Healthy => false,
            Machine::Worn => true,
            Machine::WearsAfter(s) => t >= s,
        };
        let accel = self.vibration.sample(t, worn, &mut self.rng);
        let lsb = AccelRange::from_register(self.registers[reg::ACCEL_CONFIG as usize]).lsb_per_g()
            as f64;
        let mut words = [0i16; 7];
        for axis in 0..3 {
            words[axis] = (accel[axis] * lsb).round().clamp(-32768.0, 32767.0) as i16;
        }
        words[3] = ((31.5 - 36.53) * 340.0 + self.rng.normal(20.0)) as i16;
        for axis in 0..3 {
            words[4 + axis] = self.rng.normal(8.0) as i16;
        }
        for (i, w) in words.iter().enumerate() {
            let [hi, lo] = w.to_be_bytes();
            self.registers[reg::ACCEL_XOUT_H as usize + 2 * i] = hi;
            self.registers[reg::ACCEL_XOUT_H as usize + 2 * i + 1] = lo;
        }
    }

    fn write_register(&mut self, register: u8, value: u8) {
        match register {
            reg::PWR_MGMT_1 if value & 0x80 != 0 => self.power_on_reset(),
            reg::SMPLRT_DIV
            | reg::CONFIG
            | reg::GYRO_CONFIG
            | reg::ACCEL_CONFIG
            | reg::PWR_MGMT_1 => self.registers[register as usize] = value,
            _ => {} // read-only or unused: ignored, as on the chip
        }
    }
}

impl ErrorType for SimulatedMpu6050 {
    type Error = SimError;
}

impl I2c for SimulatedMpu6050 {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), SimError> {
        self.transactions += 1;
        if address != self.address || self.fault == Fault::Absent {
            return Err(SimError(ErrorKind::NoAcknowledge(
                NoAcknowledgeSource::Address,
            )));
        }
        if let Fault::NackEvery(n) = self.fault {
            if n > 0 && self.transactions.is_multiple_of(n as u64) {
                return Err(SimError(ErrorKind::NoAcknowledge(
                    NoAcknowledgeSource::Data,
                )));
            }
        }
        for op in operations {
            match op {
                Operation::Write(bytes) => {
                    let Some((&register, values)) = bytes.split_first() else {
                        continue;
                    };
                    self.pointer = register & 0x7f;
                    for &v in values {
                        self.write_register(self.pointer, v);
                        self.pointer = (self.pointer + 1) & 0x7f;
                    }
                }
                Operation::Read(buf) => {
                    if self.pointer == reg::ACCEL_XOUT_H && !self.asleep() {
                        self.data_reads += 1;
                        if let Fault::GarbageEvery(n) = self.fault {
                            if n > 0 && self.data_reads.is_multiple_of(n as u64) {
                                buf.fill(0xff);
                                continue;
                            }
                        }
                        self.latch_sample();
                    }
                    for b in buf.iter_mut() {
                        *b = self.registers[self.pointer as usize];
                        self.pointer = (self.pointer + 1) & 0x7f;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A `sim:` bus description from a config file: `sim:MACHINE[,fault][,seed=N]` where MACHINE is
/// `healthy`, `worn` or `wears-after=SECONDS`, and the fault one of `nack-every=N`,
/// `garbage-every=N`, `absent`, `foreign`. Example: `sim:healthy,nack-every=50,seed=3`.
#[derive(Clone, Debug, PartialEq)]
pub struct SimSpec {
    /// The machine.
    pub machine: Machine,
    /// The fault.
    pub fault: Fault,
    /// Signal seed.
    pub seed: u64,
}

impl SimSpec {
    /// Parses the text after `sim:`.
    pub fn parse(text: &str) -> Result<SimSpec, String> {
        let mut spec = SimSpec {
            machine: Machine::Healthy,
            fault: Fault::None,
            seed: 1,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let number = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| format!("sim bus: '{part}' needs a non-negative number"))
            };
            match key {
                "healthy" => spec.machine = Machine::Healthy,
                "worn" => spec.machine = Machine::Worn,
                "wears-after" => spec.machine = Machine::WearsAfter(number()?),
                "nack-every" => spec.fault = Fault::NackEvery(number()?.max(1.0) as u32),
                "garbage-every" => spec.fault = Fault::GarbageEvery(number()?.max(1.0) as u32),
                "absent" => spec.fault = Fault::Absent,
                "foreign" => spec.fault = Fault::Foreign,
                "seed" => spec.seed = number()? as u64,
                _ => {
                    return Err(format!(
                        "sim bus: unknown part '{part}' (expected healthy, worn, wears-after=S, \
                         nack-every=N, garbage-every=N, absent, foreign, seed=N)"
                    ))
                }
            }
        }
        Ok(spec)
    }

    /// The emulated chip at `address`.
    pub fn build(&self, address: u8) -> SimulatedMpu6050 {
        SimulatedMpu6050::new(address, self.machine, self.seed).with_fault(self.fault)
    }
}
