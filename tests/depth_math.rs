//! The depth-attention math of ATTNRES.md: its test vectors T1-T4 and the identities any
//! correct implementation satisfies.

use candle_core::{DType, Device, Tensor};
use depthlens::model::{AttnResMode, DepthQuery};
use depthlens::reference::depth::{depth_attention, DepthRule, DepthState};

fn row(v: &[f64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), (1, v.len()), &Device::Cpu).unwrap()
}

fn query(w: &[f64], g: Option<&[f64]>) -> DepthQuery {
    let n = w.len();
    DepthQuery {
        query: Tensor::from_vec(w.to_vec(), n, &Device::Cpu).unwrap(),
        key_gain: match g {
            Some(g) => Tensor::from_vec(g.to_vec(), n, &Device::Cpu).unwrap(),
            None => Tensor::ones(n, DType::F64, &Device::Cpu).unwrap(),
        },
    }
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tol, "got {got:?}, want {want:?}");
    }
}

const EPS: f64 = 1e-6;

#[test]
fn t1_rms_normalised_keys_without_scale() {
    let (a, b) = (row(&[1., 0., 0., 0.]), row(&[0., 1., 0., 0.]));
    let mixed = depth_attention(&[&a, &b], &query(&[2., 0., 0., 0.], None), EPS).unwrap();
    let alpha = values(&mixed.alpha);
    assert_close(&alpha, &[0.9820136, 0.0179864], 1e-7);
    // The logit gap is the first source's logit: 2 / sqrt(1/4 + eps).
    assert!(((alpha[0] / alpha[1]).ln() - 3.999992).abs() < 1e-6);
    assert_close(
        &values(&mixed.hidden),
        &[0.9820136, 0.0179864, 0., 0.],
        1e-7,
    );
}

#[test]
fn t2_zero_query_is_the_mean_of_sources() {
    let s = [
        row(&[1., 2., 3., 4.]),
        row(&[-1., 0., 5., 2.]),
        row(&[10., 0., 0., 0.]),
    ];
    let mixed = depth_attention(&[&s[0], &s[1], &s[2]], &query(&[0.; 4], None), EPS).unwrap();
    assert_close(&values(&mixed.alpha), &[1. / 3.; 3], 1e-12);
    assert_close(
        &values(&mixed.hidden),
        &[3.3333333, 0.6666667, 2.6666667, 2.0],
        1e-7,
    );
}

#[test]
fn t3_block_walk_with_two_sublayers_per_block() {
    let q = query(&[2., 0., 0., 0.], None);
    let forced = [
        [0., 1., 0., 0.],
        [0., 0., 1., 0.],
        [0., 0., 0., 1.],
        [0., 1., 1., 1.],
    ];
    let want_inputs = [
        vec![3., 0., 0., 0.],
        vec![2.9460413, 0.0179862, 0., 0.],
        vec![2.9460413, 0.0179862, 0.0179862, 0.],
        vec![2.8939894, 0.0176684, 0.0176684, 0.0176684],
    ];
    let mut state = DepthState::new(
        DepthRule::AttnRes(AttnResMode::Block { block_size: 2 }),
        row(&[3., 0., 0., 0.]),
    )
    .unwrap();
    for (l, (out, want)) in forced.iter().zip(&want_inputs).enumerate() {
        let mixed = state.mix(Some(&q), EPS).unwrap();
        assert_close(&values(&mixed.hidden), want, 1e-7);
        if l == 3 {
            assert_close(
                &values(&mixed.alpha),
                &[0.9646631, 0.0176684, 0.0176684],
                1e-7,
            );
            let labels: Vec<&str> = state.sources().iter().map(|(l, _)| *l).collect();
            assert_eq!(labels, ["emb", "B1", "partial"]);
        }
        state
            .push_output(&format!("op{l}"), row(out), l == 3)
            .unwrap();
    }
    let labels: Vec<&str> = state.sources().iter().map(|(l, _)| *l).collect();
    assert_eq!(
        labels,
        ["emb", "B1", "B2"],
        "the last sublayer closes the trailing block"
    );
    let fin = state.mix(Some(&q), EPS).unwrap();
    assert_close(
        &values(&fin.hidden),
        &[2.8939894, 0.0353369, 0.0353369, 0.0353369],
        1e-7,
    );
}

#[test]
fn t4_key_norm_gain_folds_into_the_query() {
    let (a, b) = (row(&[1., 2., 3., 4.]), row(&[-1., 0., 5., 2.]));
    let with_gain = depth_attention(
        &[&a, &b],
        &query(&[1., -1., 0.5, 0.25], Some(&[0.5, 2., 1., 3.])),
        EPS,
    )
    .unwrap();
    assert_close(&values(&with_gain.alpha), &[0.2864127, 0.7135873], 1e-7);
    assert_close(
        &values(&with_gain.hidden),
        &[-0.4271745, 0.5728255, 4.4271745, 2.5728255],
        1e-7,
    );
    let folded = depth_attention(&[&a, &b], &query(&[0.5, -2., 0.5, 0.75], None), EPS).unwrap();
    assert_close(&values(&folded.alpha), &values(&with_gain.alpha), 1e-12);
}

#[test]
fn block_without_partial_never_adds_a_zero_source() {
    // At the first sublayer of a block only completed blocks are sources.
    let mut state = DepthState::new(
        DepthRule::AttnRes(AttnResMode::Block { block_size: 1 }),
        row(&[1., 0.]),
    )
    .unwrap();
    state.push_output("a", row(&[0., 1.]), false).unwrap();
    let labels: Vec<&str> = state.sources().iter().map(|(l, _)| *l).collect();
    assert_eq!(labels, ["emb", "B1"]);
}
