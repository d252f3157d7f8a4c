//! Training dynamics, from the log a checkpoint carries (`depthlens train` writes one into the
//! demo models): train and validation loss over steps, and each parameter group's gradient norm
//! over steps, as lines and as a group x step heatmap (the report's training-dynamics figure).

use super::{ColorScale, Heatmap, LineChart, LineSeries};
use crate::trace::Rows;

/// A parsed training log.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingLog {
    pub steps: Vec<usize>,
    pub train_loss: Vec<f32>,
    /// NaN where no evaluation ran.
    pub val_loss: Vec<f32>,
    /// `embedding`, `L0`, ..., `head`.
    pub groups: Vec<String>,
    /// `[groups][steps]` gradient norms (before clipping).
    pub grad_norms: Rows,
}

/// Read the CSV `depthlens train` writes (`step,train_loss,val_loss,lr,grad_norm,
/// grad_norm_<group>...`). Errors name the line and column.
pub fn parse_training_log(csv: &str) -> Result<TrainingLog, String> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("the training log is empty")?
        .split(',')
        .collect();
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let (step, train, val) = match (col("step"), col("train_loss"), col("val_loss")) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => return Err("the training log's header lacks step, train_loss or val_loss".into()),
    };
    let group_cols: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            h.trim()
                .strip_prefix("grad_norm_")
                .map(|g| (i, g.to_string()))
        })
        .collect();
    let mut log = TrainingLog {
        steps: Vec::new(),
        train_loss: Vec::new(),
        val_loss: Vec::new(),
        groups: group_cols.iter().map(|(_, g)| g.clone()).collect(),
        grad_norms: Rows::default(),
    };
    let mut norms: Vec<Vec<f32>> = vec![Vec::new(); group_cols.len()];
    for (n, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        let at = |i: usize, what: &str| -> Result<f32, String> {
            let f = fields.get(i).map(|s| s.trim()).unwrap_or("");
            if f.is_empty() {
                return Ok(f32::NAN);
            }
            f.parse::<f32>()
                .map_err(|_| format!("training log line {}: {what} `{f}` is not a number", n + 2))
        };
        let s = fields
            .get(step)
            .and_then(|s| s.trim().parse::<usize>().ok())
            .ok_or_else(|| format!("training log line {}: no step number", n + 2))?;
        log.steps.push(s);
        log.train_loss.push(at(train, "train_loss")?);
        log.val_loss.push(at(val, "val_loss")?);
        for (k, (i, g)) in group_cols.iter().enumerate() {
            norms[k].push(at(*i, &format!("grad_norm_{g}"))?);
        }
    }
    if log.steps.is_empty() {
        return Err("the training log has a header but no steps".into());
    }
    log.grad_norms = Rows::from_rows(norms).ok_or("ragged training log")?;
    Ok(log)
}

/// The training-dynamics figure of one model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainingFigure {
    pub loss: LineChart,
    pub grad_lines: LineChart,
    pub grad_heatmap: Heatmap,
}

pub fn training(log: &TrainingLog, name: &str) -> TrainingFigure {
    let steps: Vec<String> = log.steps.iter().map(|s| s.to_string()).collect();
    let n_groups = log.groups.len().max(1);
    // Lines coloured along viridis by depth: embedding dark, head bright.
    let scale = ColorScale::fixed(0.0, 1.0);
    let grad_series = log
        .groups
        .iter()
        .enumerate()
        .map(|(g, group)| LineSeries {
            label: group.clone(),
            values: log.grad_norms[g].to_vec(),
            band: None,
            color: scale.color_at(g as f32 / (n_groups - 1).max(1) as f32 * 0.9),
            dashed: false,
        })
        .collect();
    TrainingFigure {
        loss: LineChart {
            title: format!("Training loss of {name}"),
            x_axis: "step".into(),
            x_labels: steps.clone(),
            y_axis: "cross-entropy (nats)".into(),
            log_y: false,
            series: vec![
                LineSeries {
                    label: "train".into(),
                    values: log.train_loss.clone(),
                    band: None,
                    color: super::lines::PALETTE[0],
                    dashed: false,
                },
                LineSeries {
                    label: "validation".into(),
                    values: log.val_loss.clone(),
                    band: None,
                    color: super::lines::PALETTE[1],
                    dashed: true,
                },
            ],
        },
        grad_lines: LineChart {
            title: format!("Gradient norm per parameter group of {name}"),
            x_axis: "step".into(),
            x_labels: steps.clone(),
            y_axis: "gradient norm (log)".into(),
            log_y: true,
            series: grad_series,
        },
        grad_heatmap: Heatmap {
            title: format!("Gradient norm per group and step of {name}"),
            row_axis: "parameter group".into(),
            col_axis: "step".into(),
            row_labels: log.groups.clone(),
            col_labels: steps,
            values: log.grad_norms.flat().to_vec(),
            value_name: "gradient norm".into(),
            scale: ColorScale::fit(log.grad_norms.flat(), true),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_depthlens_train_writes_parses_back() {
        let csv = "step,train_loss,val_loss,lr,grad_norm,grad_norm_embedding,grad_norm_L0,grad_norm_head\n\
                   1,7.5,7.4,1e-4,2.0,0.8,0.9,0.3\n\
                   2,7.0,,1e-4,1.5,0.7,0.6,0.2\n";
        let log = parse_training_log(csv).unwrap();
        assert_eq!(log.steps, vec![1, 2]);
        assert_eq!(log.train_loss, vec![7.5, 7.0]);
        assert!(log.val_loss[1].is_nan(), "no evaluation at step 2");
        assert_eq!(log.groups, ["embedding", "L0", "head"]);
        assert_eq!(&log.grad_norms[1], &[0.9, 0.6]);
        let fig = training(&log, "m");
        assert_eq!(fig.grad_heatmap.value(2, 1), Some(0.2));
    }

    #[test]
    fn a_broken_log_names_its_line() {
        let err = parse_training_log("step,train_loss,val_loss\n1,x,2\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("train_loss"),
            "{err}"
        );
        assert!(parse_training_log("").is_err());
        assert!(parse_training_log("a,b\n1,2\n").is_err());
    }
}
