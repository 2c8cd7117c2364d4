//! The MPU-6050 driver against a mocked bus (the exact bytes on the wire, NACKs, garbage) and
//! against the emulated chip (the signal the vibration model expects).

use edge_sensors::mpu6050::{AccelRange, Error, GyroRange, Mpu6050, Settings};
use edge_sensors::sim::{Fault, Machine, SimSpec, SimulatedMpu6050};
use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

const ADDR: u8 = 0x68;

fn init_transactions(who_am_i: u8) -> Vec<Transaction> {
    vec![
        Transaction::write_read(ADDR, vec![0x75], vec![who_am_i]),
        Transaction::write(ADDR, vec![0x6B, 0x01]),
        Transaction::write(ADDR, vec![0x1A, 0x01]),
        Transaction::write(ADDR, vec![0x19, 4]), // 1000 / 200 - 1
        Transaction::write(ADDR, vec![0x1C, 0x08]), // ±4 g
        Transaction::write(ADDR, vec![0x1B, 0x08]), // ±500 °/s
    ]
}

fn data(words: [i16; 7]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

#[test]
fn init_configures_the_chip_and_read_decodes_units() {
    let mut expected = init_transactions(0x68);
    // 1 g on z at ±4 g, 25 °C, 10 °/s on x at ±500 °/s (65.5 LSB per °/s)
    let temp = ((25.0 - 36.53) * 340.0) as i16;
    expected.push(Transaction::write_read(
        ADDR,
        vec![0x3B],
        data([4096, -2048, 8192, temp, 655, 0, -655]),
    ));
    let mut bus = Mock::new(&expected);
    let mut imu = Mpu6050::new(bus.clone(), ADDR);
    imu.init(&Settings::default()).unwrap();
    let r = imu.read().unwrap();
    assert_eq!(r.accel_g, [0.5, -0.25, 1.0]);
    assert!((r.gyro_dps[0] - 10.0).abs() < 1e-4 && (r.gyro_dps[2] + 10.0).abs() < 1e-4);
    assert!((r.temperature_c - 25.0).abs() < 0.01);
    bus.done();
}

#[test]
fn ranges_scale_counts() {
    assert_eq!(AccelRange::G2.lsb_per_g(), 16384.0);
    assert_eq!(AccelRange::G16.lsb_per_g(), 2048.0);
    assert_eq!(GyroRange::Dps250.lsb_per_dps(), 131.0);
    assert_eq!(GyroRange::Dps2000.lsb_per_dps(), 16.375);
}

#[test]
fn a_chip_that_does_not_answer_is_a_clear_bus_error() {
    let expected = [Transaction::write_read(ADDR, vec![0x75], vec![0])
        .with_error(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))];
    let mut bus = Mock::new(&expected);
    let mut imu = Mpu6050::new(bus.clone(), ADDR);
    let err = imu.init(&Settings::default()).unwrap_err();
    assert!(matches!(err, Error::Bus(_)));
    assert!(err.to_string().contains("no acknowledge"), "{err}");
    bus.done();
}

#[test]
fn a_foreign_chip_is_refused() {
    let expected = [Transaction::write_read(ADDR, vec![0x75], vec![0x12])];
    let mut bus = Mock::new(&expected);
    let mut imu = Mpu6050::new(bus.clone(), ADDR);
    let err = imu.init(&Settings::default()).unwrap_err();
    assert_eq!(err, Error::WrongDevice { who_am_i: 0x12 });
    assert!(err.to_string().contains("0x12"));
    bus.done();
}

#[test]
fn garbage_on_the_bus_is_an_error_not_a_sample() {
    let mut expected = init_transactions(0x70); // an MPU-6500 is accepted
    expected.push(Transaction::write_read(ADDR, vec![0x3B], vec![0xff; 14]));
    expected.push(Transaction::write_read(ADDR, vec![0x3B], vec![0x00; 14]));
    // a temperature of 36.53 + 32767/340 = 132 °C: impossible for the die
    expected.push(Transaction::write_read(
        ADDR,
        vec![0x3B],
        data([1, 2, 3, i16::MAX, 0, 0, 0]),
    ));
    expected.push(
        Transaction::write_read(ADDR, vec![0x3B], vec![0; 14])
            .with_error(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data)),
    );
    expected.push(Transaction::write_read(
        ADDR,
        vec![0x3B],
        data([0, 0, 8192, 0, 0, 0, 0]),
    ));
    let mut bus = Mock::new(&expected);
    let mut imu = Mpu6050::new(bus.clone(), ADDR);
    imu.init(&Settings::default()).unwrap();
    assert_eq!(imu.read().unwrap_err(), Error::Stuck(0xff));
    assert_eq!(imu.read().unwrap_err(), Error::Stuck(0x00));
    let e = imu.read().unwrap_err();
    assert!(matches!(e, Error::Implausible { .. }), "{e:?}");
    assert!(e.to_string().contains("garbage"));
    assert!(matches!(imu.read().unwrap_err(), Error::Bus(_)));
    // and the next good burst reads fine: errors leave no state behind
    assert_eq!(imu.read().unwrap().accel_g, [0.0, 0.0, 1.0]);
    bus.done();
}

#[test]
fn a_bad_rate_is_refused_before_touching_the_bus() {
    let mut bus = Mock::new(&[]);
    let mut imu = Mpu6050::new(bus.clone(), ADDR);
    let settings = Settings {
        rate_hz: 2000,
        ..Settings::default()
    };
    assert_eq!(imu.init(&settings).unwrap_err(), Error::BadRate(2000));
    bus.done();
}

fn window(imu: &mut Mpu6050<SimulatedMpu6050>, n: usize) -> Vec<[f32; 3]> {
    (0..n).map(|_| imu.read().unwrap().accel_g).collect()
}

/// RMS of an axis after removing its mean.
fn ac_rms(samples: &[[f32; 3]], axis: usize) -> f32 {
    let mean = samples.iter().map(|s| s[axis]).sum::<f32>() / samples.len() as f32;
    (samples
        .iter()
        .map(|s| (s[axis] - mean).powi(2))
        .sum::<f32>()
        / samples.len() as f32)
        .sqrt()
}

#[test]
fn the_emulated_chip_speaks_the_same_protocol_and_vibrates() {
    let mut asleep = Mpu6050::new(SimulatedMpu6050::new(ADDR, Machine::Healthy, 1), ADDR);
    // powered up asleep, never initialized: the data registers are all zero
    assert_eq!(asleep.read().unwrap_err(), Error::Stuck(0));

    let mut healthy = Mpu6050::new(SimulatedMpu6050::new(ADDR, Machine::Healthy, 1), ADDR);
    healthy.init(&Settings::default()).unwrap();
    let h = window(&mut healthy, 512);
    let gravity = h.iter().map(|s| s[2]).sum::<f32>() / h.len() as f32;
    assert!((gravity - 1.0).abs() < 0.02, "{gravity}");
    let rms_h = ac_rms(&h, 0);
    assert!((0.03..0.12).contains(&rms_h), "{rms_h}");

    let mut worn = Mpu6050::new(SimulatedMpu6050::new(ADDR, Machine::Worn, 1), ADDR);
    worn.init(&Settings::default()).unwrap();
    let rms_w = ac_rms(&window(&mut worn, 512), 0);
    assert!(rms_w > rms_h * 1.3, "worn {rms_w} vs healthy {rms_h}");

    // same seed, same signal
    let mut again = Mpu6050::new(SimulatedMpu6050::new(ADDR, Machine::Healthy, 1), ADDR);
    again.init(&Settings::default()).unwrap();
    assert_eq!(window(&mut again, 512), h);
}

#[test]
fn emulated_faults() {
    let mut absent = Mpu6050::new(SimSpec::parse("healthy,absent").unwrap().build(ADDR), ADDR);
    assert!(matches!(
        absent.init(&Settings::default()),
        Err(Error::Bus(_))
    ));
    let mut wrong_address = Mpu6050::new(SimulatedMpu6050::new(ADDR, Machine::Healthy, 1), 0x69);
    assert!(matches!(
        wrong_address.init(&Settings::default()),
        Err(Error::Bus(_))
    ));
    let mut foreign = Mpu6050::new(SimSpec::parse("foreign").unwrap().build(ADDR), ADDR);
    assert_eq!(
        foreign.init(&Settings::default()).unwrap_err(),
        Error::WrongDevice { who_am_i: 0x12 }
    );

    let chip = SimulatedMpu6050::new(ADDR, Machine::Healthy, 1).with_fault(Fault::GarbageEvery(4));
    let mut flaky = Mpu6050::new(chip, ADDR);
    flaky.init(&Settings::default()).unwrap();
    let results: Vec<_> = (0..8).map(|_| flaky.read()).collect();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 2);
    assert_eq!(results[3].as_ref().unwrap_err(), &Error::Stuck(0xff));

    let spec = SimSpec::parse("wears-after=1.5, nack-every=10, seed=9").unwrap();
    assert_eq!(spec.machine, Machine::WearsAfter(1.5));
    assert_eq!(spec.fault, Fault::NackEvery(10));
    assert_eq!(spec.seed, 9);
    assert!(SimSpec::parse("wobbly")
        .unwrap_err()
        .contains("unknown part 'wobbly'"));
    assert!(SimSpec::parse("nack-every=x").is_err());
}
