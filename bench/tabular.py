"""Tabular models for the harness (issue 23): what IoT devices run on sensor data, trained here
on scikit-learn's bundled datasets (no download) and exported the way users export them
(skl2onnx for scikit-learn, onnxmltools for LightGBM and XGBoost), each benchmarked at batch 1
and batch 256 on real rows of its dataset.

    tabular_models(work_dir) -> [(label, model.onnx, --shape, --input rows.npy), ...]

Deterministic (fixed seeds); the files are rewritten only when missing.
"""
import os

import numpy as np


def _datasets():
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
    xc, yc = load_breast_cancer(return_X_y=True)
    xr, yr = load_diabetes(return_X_y=True)
    xw, yw = load_wine(return_X_y=True)
    return (xc.astype(np.float32), yc), (xr.astype(np.float32), yr), (xw.astype(np.float32), yw)


def _export_sklearn(est, x):
    from skl2onnx import to_onnx
    opts = {id(est): {"zipmap": False}} if hasattr(est, "predict_proba") else None
    return to_onnx(est, x[:1], options=opts, target_opset={"": 17, "ai.onnx.ml": 3})


def _export_mltools(kind, est, features):
    from onnxmltools import convert_lightgbm, convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    types = [("x", FloatTensorType([None, features]))]
    if kind == "lightgbm":
        return convert_lightgbm(est, initial_types=types, zipmap=False, target_opset=15)
    return convert_xgboost(est, initial_types=types, target_opset=15)


def tabular_models(work):
    import onnx
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler
    from sklearn.svm import SVC

    out_dir = os.path.join(work, "tabular")
    os.makedirs(out_dir, exist_ok=True)
    (xc, yc), (xr, yr), (xw, yw) = _datasets()
    specs = [
        ("sklearn gradient-boosted trees, 100 × depth 3 (TreeEnsembleClassifier)", "gbt", xc,
         lambda: _export_sklearn(GradientBoostingClassifier(n_estimators=100, random_state=0).fit(xc, yc), xc)),
        ("sklearn random forest regressor, 100 trees (TreeEnsembleRegressor)", "rf", xr,
         lambda: _export_sklearn(RandomForestRegressor(n_estimators=100, random_state=0).fit(xr, yr), xr)),
        ("LightGBM classifier, 100 trees", "lgbm", xc,
         lambda: _export_mltools("lightgbm", __import__("lightgbm").LGBMClassifier(n_estimators=100, verbose=-1, random_state=0).fit(xc, yc), xc.shape[1])),
        ("XGBoost regressor, 100 trees", "xgb", xr,
         lambda: _export_mltools("xgboost", __import__("xgboost").XGBRegressor(n_estimators=100, random_state=0).fit(xr, yr), xr.shape[1])),
        ("sklearn scaler + normalizer + logistic regression", "logreg", xw,
         lambda: _export_sklearn(make_pipeline(StandardScaler(), Normalizer(), LogisticRegression(max_iter=1000)).fit(xw, yw), xw)),
        ("sklearn scaler + SVC (RBF, probabilities)", "svc", xw,
         lambda: _export_sklearn(make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)).fit(xw, yw), xw)),
    ]
    rows = []
    for label, name, x, build in specs:
        path = os.path.join(out_dir, f"{name}.onnx")
        if not os.path.exists(path):
            onnx.save(build(), path)
        input_name = onnx.load(path).graph.input[0].name
        for batch in (1, 256):
            picked = x[np.arange(batch) * 7 % len(x)]
            rows_path = os.path.join(out_dir, f"{name}.rows{batch}.npy")
            np.save(rows_path, picked)
            rows.append((f"{label}, batch {batch}", path, f"{input_name}={batch}x{x.shape[1]}", rows_path))
    return rows
