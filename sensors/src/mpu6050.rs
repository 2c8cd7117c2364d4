//! Driver for the InvenSense MPU-6050 6-axis IMU (accelerometer + gyroscope + temperature) over
//! I²C, generic over [`embedded_hal::i2c::I2c`]. Also accepts the register-compatible MPU-6500 and
//! MPU-9250. Every reading is checked: a bus that returns the same byte everywhere (0x00 or 0xFF:
//! a floating or shorted bus, a chip in reset) or an impossible die temperature is an error, not a
//! sample.

use core::fmt;

use embedded_hal::i2c::{ErrorKind, I2c};

/// Default I²C address (AD0 low); 0x69 with AD0 high.
pub const DEFAULT_ADDRESS: u8 = 0x68;

/// Register addresses used by the driver.
pub mod reg {
    /// Sample rate divider: rate = gyro output rate / (1 + div).
    pub const SMPLRT_DIV: u8 = 0x19;
    /// Digital low-pass filter.
    pub const CONFIG: u8 = 0x1A;
    /// Gyroscope full scale.
    pub const GYRO_CONFIG: u8 = 0x1B;
    /// Accelerometer full scale.
    pub const ACCEL_CONFIG: u8 = 0x1C;
    /// First of 14 data bytes: accel x/y/z, temperature, gyro x/y/z, big-endian i16 each.
    pub const ACCEL_XOUT_H: u8 = 0x3B;
    /// Power management 1: reset, sleep, clock source.
    pub const PWR_MGMT_1: u8 = 0x6B;
    /// Identity register.
    pub const WHO_AM_I: u8 = 0x75;
}

/// WHO_AM_I values of the chips this driver speaks to: MPU-6050, MPU-6500, MPU-9250.
pub const KNOWN_IDS: [u8; 3] = [0x68, 0x70, 0x71];

/// Accelerometer full-scale range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccelRange {
    /// ±2 g (16384 LSB/g).
    G2,
    /// ±4 g (8192 LSB/g).
    G4,
    /// ±8 g (4096 LSB/g).
    G8,
    /// ±16 g (2048 LSB/g).
    G16,
}

impl AccelRange {
    fn bits(self) -> u8 {
        (self as u8) << 3
    }

    /// Counts per g.
    pub fn lsb_per_g(self) -> f32 {
        16384.0 / (1 << self as u8) as f32
    }

    /// The range whose ACCEL_CONFIG bits are `value`.
    pub fn from_register(value: u8) -> AccelRange {
        match (value >> 3) & 3 {
            0 => AccelRange::G2,
            1 => AccelRange::G4,
            2 => AccelRange::G8,
            _ => AccelRange::G16,
        }
    }
}

/// Gyroscope full-scale range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GyroRange {
    /// ±250 °/s.
    Dps250,
    /// ±500 °/s.
    Dps500,
    /// ±1000 °/s.
    Dps1000,
    /// ±2000 °/s.
    Dps2000,
}

impl GyroRange {
    fn bits(self) -> u8 {
        (self as u8) << 3
    }

    /// Counts per °/s.
    pub fn lsb_per_dps(self) -> f32 {
        131.0 / (1 << self as u8) as f32
    }
}

/// How to configure the chip.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Accelerometer range.
    pub accel: AccelRange,
    /// Gyroscope range.
    pub gyro: GyroRange,
    /// Output data rate in Hz, 4..=1000 (the chip's 1 kHz internal rate divided down).
    pub rate_hz: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            accel: AccelRange::G4,
            gyro: GyroRange::Dps500,
            rate_hz: 200,
        }
    }
}

/// One reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// Acceleration x, y, z in g.
    pub accel_g: [f32; 3],
    /// Angular rate x, y, z in °/s.
    pub gyro_dps: [f32; 3],
    /// Die temperature in °C.
    pub temperature_c: f32,
}

/// What went wrong talking to the chip.
#[derive(Debug, PartialEq)]
pub enum Error<E> {
    /// The bus transaction failed (no acknowledge, arbitration loss, bus error...).
    Bus(E),
    /// WHO_AM_I answered something that is not an MPU-6050 family chip.
    WrongDevice {
        /// The value read.
        who_am_i: u8,
    },
    /// The rate is outside 4..=1000 Hz.
    BadRate(u32),
    /// All 14 data bytes were the same value: a floating or shorted bus, or a chip in reset.
    Stuck(u8),
    /// The die temperature is outside the chip's -40..85 °C operating range: garbage on the bus.
    Implausible {
        /// The temperature decoded.
        temperature_c: f32,
    },
}

impl<E: embedded_hal::i2c::Error> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bus(e) => match e.kind() {
                ErrorKind::NoAcknowledge(_) => write!(
                    f,
                    "I2C: no acknowledge from the MPU-6050 (wrong address or bus, not powered, or unplugged)"
                ),
                kind => write!(f, "I2C bus error: {kind}"),
            },
            Error::WrongDevice { who_am_i } => write!(
                f,
                "WHO_AM_I is 0x{who_am_i:02x}, not an MPU-6050/6500/9250 (0x68/0x70/0x71): wrong address?"
            ),
            Error::BadRate(hz) => write!(f, "sample rate {hz} Hz is outside 4..=1000 Hz"),
            Error::Stuck(b) => write!(
                f,
                "every data byte read 0x{b:02x}: the bus is floating or shorted, or the chip is in reset"
            ),
            Error::Implausible { temperature_c } => write!(
                f,
                "garbage on the bus: die temperature {temperature_c:.1} °C is outside -40..85 °C"
            ),
        }
    }
}

impl<E: embedded_hal::i2c::Error> std::error::Error for Error<E> {}

/// An MPU-6050 on an I²C bus.
#[derive(Debug)]
pub struct Mpu6050<I> {
    i2c: I,
    address: u8,
    accel_lsb_per_g: f32,
    gyro_lsb_per_dps: f32,
}

impl<I: I2c> Mpu6050<I> {
    /// A driver for the chip at `address` (usually [`DEFAULT_ADDRESS`]). Nothing is sent until
    /// [`init`](Self::init).
    pub fn new(i2c: I, address: u8) -> Mpu6050<I> {
        let defaults = Settings::default();
        Mpu6050 {
            i2c,
            address,
            accel_lsb_per_g: defaults.accel.lsb_per_g(),
            gyro_lsb_per_dps: defaults.gyro.lsb_per_dps(),
        }
    }

    /// Checks the chip's identity, wakes it up and configures ranges, filter and rate.
    pub fn init(&mut self, settings: &Settings) -> Result<(), Error<I::Error>> {
        if !(4..=1000).contains(&settings.rate_hz) {
            return Err(Error::BadRate(settings.rate_hz));
        }
        let who_am_i = self.read_register(reg::WHO_AM_I)?;
        if !KNOWN_IDS.contains(&who_am_i) {
            return Err(Error::WrongDevice { who_am_i });
        }
        // wake up, clock from the X gyro PLL (more stable than the internal oscillator)
        self.write_register(reg::PWR_MGMT_1, 0x01)?;
        // DLPF 1: accel bandwidth 184 Hz, internal rate 1 kHz
        self.write_register(reg::CONFIG, 0x01)?;
        self.write_register(reg::SMPLRT_DIV, (1000 / settings.rate_hz - 1) as u8)?;
        self.write_register(reg::ACCEL_CONFIG, settings.accel.bits())?;
        self.write_register(reg::GYRO_CONFIG, settings.gyro.bits())?;
        self.accel_lsb_per_g = settings.accel.lsb_per_g();
        self.gyro_lsb_per_dps = settings.gyro.lsb_per_dps();
        Ok(())
    }

    /// Reads acceleration, angular rate and temperature in one burst (14 bytes).
    pub fn read(&mut self) -> Result<Reading, Error<I::Error>> {
        let mut raw = [0u8; 14];
        self.i2c
            .write_read(self.address, &[reg::ACCEL_XOUT_H], &mut raw)
            .map_err(Error::Bus)?;
        if raw.iter().all(|&b| b == raw[0]) {
            return Err(Error::Stuck(raw[0]));
        }
        let word = |i: usize| i16::from_be_bytes([raw[2 * i], raw[2 * i + 1]]) as f32;
        let temperature_c = word(3) / 340.0 + 36.53;
        if !(-40.0..=85.0).contains(&temperature_c) {
            return Err(Error::Implausible { temperature_c });
        }
        Ok(Reading {
            accel_g: [0, 1, 2].map(|i| word(i) / self.accel_lsb_per_g),
            gyro_dps: [4, 5, 6].map(|i| word(i) / self.gyro_lsb_per_dps),
            temperature_c,
        })
    }

    /// Gives the bus back.
    pub fn release(self) -> I {
        self.i2c
    }

    fn read_register(&mut self, register: u8) -> Result<u8, Error<I::Error>> {
        let mut value = [0u8];
        self.i2c
            .write_read(self.address, &[register], &mut value)
            .map_err(Error::Bus)?;
        Ok(value[0])
    }

    fn write_register(&mut self, register: u8, value: u8) -> Result<(), Error<I::Error>> {
        self.i2c
            .write(self.address, &[register, value])
            .map_err(Error::Bus)
    }
}
