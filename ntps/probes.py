"""Linear probes on mean-pooled features: what NTPS is meant to predict.

Two probes, both trained on the train split of a task and evaluated both on that same split
(in-sample, as the paper reports them) and on the held-out test split:

* :func:`logistic_probe`: multinomial logistic regression (scikit-learn, lbfgs, L2 penalty with a
  fixed ``C``), reported as accuracy;
* :func:`mse_probe`: least squares with an intercept on one-hot targets (optionally with a small
  fixed ridge), reported as the mean squared error **summed over the C classes** and averaged over
  texts, ``(1/N) sum_i ||y_i - yhat_i||^2`` (scikit-learn's ``mean_squared_error`` averages over the
  classes too: it is this value divided by C). This is the loss of the NTPS theorem (theory chapter, section 5).

Features are standardised with the mean and standard deviation of the **train** split (columns
with zero variance are only centred); the test split is transformed with the same statistics.
Everything is deterministic. :func:`probe_layers` runs both probes on every layer of a feature
stack ``[N, L, d]`` (as returned by ``ntps.extract_moments(..., return_features=True)``).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from ._linalg import reject_complex

__all__ = ["standardize", "logistic_probe", "mse_probe", "probe_layers", "majority_accuracy", "cohen_kappa",
           "LogisticProbe",
           "MSEProbe"]


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------
def _features(x, name: str, ndim: int = 2) -> np.ndarray:
    reject_complex(x, name)
    try:
        arr = np.array(x, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a numeric array: {error}") from None
    if arr.ndim != ndim:
        shape = "(N, d)" if ndim == 2 else "(N, L, d)"
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if arr.size == 0 or arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds {int((~np.isfinite(arr)).sum())} NaN or infinite values")
    return arr


def _labels(y, n: int, name: str, num_classes: int | None = None) -> np.ndarray:
    arr = np.array(y, copy=True)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{name} must be a 1-D array with one label per row ({n}), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must be integers 0..C-1, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or (num_classes is not None and arr.max() >= num_classes):
        raise ValueError(f"{name} must lie in 0..{(num_classes or arr.max() + 1) - 1}, found "
                         f"{int(arr.min())}..{int(arr.max())}")
    return arr


def _split(x_train, y_train, x_test, y_test, num_classes, ndim=2):
    xtr = _features(x_train, "x_train", ndim)
    ytr = _labels(y_train, xtr.shape[0], "y_train")
    c = int(ytr.max()) + 1 if num_classes is None else int(num_classes)
    ytr = _labels(ytr, xtr.shape[0], "y_train", c)
    if np.unique(ytr).size < 2:
        raise ValueError("y_train holds one class only: a probe needs at least two")
    if (x_test is None) != (y_test is None):
        raise ValueError("give both x_test and y_test, or neither")
    xte = yte = None
    if x_test is not None:
        xte = _features(x_test, "x_test", ndim)
        if xte.shape[1:] != xtr.shape[1:]:
            raise ValueError(f"x_test has shape {xte.shape}, x_train {xtr.shape}: the feature shapes differ")
        yte = _labels(y_test, xte.shape[0], "y_test", c)
    return xtr, ytr, xte, yte, c


def standardize(x_train, *others):
    """Standardise with the train split's statistics: ``(x - mean_train) / std_train``.

    x_train : (N, ...) array; others : arrays of the same trailing shape. Statistics are taken
    over axis 0 of x_train (population std); a column whose train std is 0 is only centred.
    Returns float64 copies ``(z_train, *z_others)``; the inputs are not modified.
    """
    xtr = np.array(x_train, dtype=np.float64, copy=True)
    mean = xtr.mean(axis=0)
    std = xtr.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    out = [(xtr - mean) / scale]
    for x in others:
        arr = np.array(x, dtype=np.float64, copy=True)
        if arr.shape[1:] != xtr.shape[1:]:
            raise ValueError(f"cannot standardise shape {arr.shape} with statistics of shape {xtr.shape}")
        out.append((arr - mean) / scale)
    return tuple(out)


# --------------------------------------------------------------------------------------------
# logistic regression
# --------------------------------------------------------------------------------------------
class LogisticProbe(NamedTuple):
    train_accuracy: float  # in-sample accuracy on the training split
    test_accuracy: float  # held-out accuracy (NaN without a test split)
    converged: bool  # lbfgs reached its tolerance within max_iter
    n_iter: int
    test_kappa: float = float("nan")  # Cohen's kappa of the held-out predictions (NaN without a test split)
    test_predictions: tuple[int, ...] | None = None  # predicted class of every held-out example, in order


def logistic_probe(x_train, y_train, x_test=None, y_test=None, *, C: float = 1.0, max_iter: int = 2000,
                   tol: float = 1e-6, num_classes: int | None = None) -> LogisticProbe:
    """Accuracy of a multinomial logistic-regression probe on standardised features.

    ``min_W,b  sum_i CE(softmax(W z_i + b), y_i) + ||W||_F^2 / (2 C)`` with z the features standardised
    by the train split's statistics; scikit-learn ``LogisticRegression(solver="lbfgs", C=C)``.

    x_train (N, d), y_train (N,) in 0..C-1; x_test (M, d), y_test (M,) optional.
    Returns :class:`LogisticProbe` (train accuracy in-sample, test accuracy held-out, convergence).
    """
    xtr, ytr, xte, yte, _ = _split(x_train, y_train, x_test, y_test, num_classes)
    return _logistic(*(standardize(xtr, xte) if xte is not None else (standardize(xtr)[0], None)),
                     ytr, yte, C=C, max_iter=max_iter, tol=tol)


def _logistic(ztr, zte, ytr, yte, *, C, max_iter, tol) -> LogisticProbe:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if not C > 0:
        raise ValueError(f"C must be positive, got {C}")
    model = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, tol=tol)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(ztr, ytr)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    train_acc = float(np.mean(model.predict(ztr) == ytr))
    if zte is None:
        return LogisticProbe(train_acc, float("nan"), converged, int(np.max(model.n_iter_)))
    predicted = model.predict(zte)
    return LogisticProbe(train_acc, float(np.mean(predicted == yte)), converged, int(np.max(model.n_iter_)),
                         cohen_kappa(yte, predicted), tuple(int(c) for c in predicted))


def cohen_kappa(truth, predicted) -> float:
    """Cohen's kappa of predicted against true labels: ``(accuracy - p_e) / (1 - p_e)``, with p_e the
    agreement two independent labelers with these marginals reach by chance, ``sum_c t_c p_c``.

    0 for any predictor that ignores its input (always answering one class scores 0, whatever the
    class balance), 1 for a perfect one: a chance-corrected accuracy that is comparable across
    tasks of different balance and number of classes. NaN when both label sets are one and the
    same class (p_e = 1).

    Examples
    --------
    >>> cohen_kappa([0, 0, 0, 1], [0, 0, 0, 0])  # the majority class: 75% accurate, kappa 0
    0.0
    >>> cohen_kappa([0, 1, 1, 0], [0, 1, 1, 0])
    1.0
    """
    truth, predicted = np.asarray(truth).ravel(), np.asarray(predicted).ravel()
    if truth.shape != predicted.shape or truth.size == 0:
        raise ValueError(f"truth and predicted must be non-empty and of one length, got {truth.size} and "
                         f"{predicted.size}")
    classes = np.union1d(truth, predicted)
    share_true = np.array([np.mean(truth == c) for c in classes])
    share_pred = np.array([np.mean(predicted == c) for c in classes])
    chance = float(share_true @ share_pred)
    if chance >= 1.0:
        return float("nan")
    return float((np.mean(truth == predicted) - chance) / (1.0 - chance))


# --------------------------------------------------------------------------------------------
# least squares on one-hot targets
# --------------------------------------------------------------------------------------------
class MSEProbe(NamedTuple):
    train_mse: float  # in-sample (1/N) sum_i ||y_i - yhat_i||^2, summed over classes
    test_mse: float  # held-out, same definition (NaN without a test split)


def _ridge_fit_predict(ztr, ytr_onehot, ridge, rcond, others):
    """Ridge / min-norm least squares with intercept via the thin SVD of the centred design.

    ``W = argmin (1/N)||Y - 1 b^T - Z W||^2 + ridge ||W||^2``; Z is centred (train means are 0
    after standardisation), so ``b = mean(Y)`` and ``W = V diag(s / (s^2 + N ridge)) U^T (Y - b)``,
    singular values ``s <= rcond * s_max`` dropped (the min-norm solution when ridge = 0).
    """
    n = ztr.shape[0]
    zc = ztr - ztr.mean(axis=0)
    b = ytr_onehot.mean(axis=0)
    u, s, vt = np.linalg.svd(zc, full_matrices=False)
    keep = s > rcond * s[0] if s[0] > 0 else np.zeros_like(s, dtype=bool)
    s, u, vt = s[keep], u[:, keep], vt[keep]
    coef = (vt.T * (s / (s**2 + n * ridge))) @ (u.T @ (ytr_onehot - b))  # (d, C)
    shift = ztr.mean(axis=0)
    return [(z - shift) @ coef + b for z in (ztr, *others)]


def mse_probe(x_train, y_train, x_test=None, y_test=None, *, ridge: float = 0.0, rcond: float = 1e-10,
              num_classes: int | None = None) -> MSEProbe:
    """Least-squares probe with intercept on one-hot targets, on standardised features.

    ``min_{W,b} (1/N) sum_i ||y_i - W^T z_i - b||^2 + ridge ||W||_F^2`` (the intercept is not
    penalised; ``ridge = 0`` is ordinary least squares, minimum-norm when the design is rank
    deficient, e.g. N <= d, where the in-sample error is then 0). Reported error: the mean over
    texts of the squared error summed over the C classes.

    x_train (N, d), y_train (N,); x_test (M, d), y_test (M,) optional. Returns :class:`MSEProbe`.
    """
    xtr, ytr, xte, yte, c = _split(x_train, y_train, x_test, y_test, num_classes)
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    ztr, *zte = standardize(xtr, *([xte] if xte is not None else []))
    return _mse(ztr, zte[0] if zte else None, ytr, yte, c, ridge, rcond)


def _mse(ztr, zte, ytr, yte, c, ridge, rcond) -> MSEProbe:
    eye = np.eye(c)
    others = [zte] if zte is not None else []
    preds = _ridge_fit_predict(ztr, eye[ytr], ridge, rcond, others)
    train = float(np.mean(np.sum((eye[ytr] - preds[0]) ** 2, axis=1)))
    test = float(np.mean(np.sum((eye[yte] - preds[1]) ** 2, axis=1))) if zte is not None else float("nan")
    return MSEProbe(train, test)


# --------------------------------------------------------------------------------------------
# every layer
# --------------------------------------------------------------------------------------------
def probe_layers(features_train, y_train, features_test=None, y_test=None, *, C: float = 1.0, ridge: float = 0.0,
                 max_iter: int = 2000, tol: float = 1e-6, num_classes: int | None = None,
                 logistic: bool = True, mse: bool = True) -> dict[str, np.ndarray]:
    """Both probes on every layer of a feature stack.

    Parameters
    ----------
    features_train : array_like, shape (N, L, d)
        Mean-pooled features of every layer (``extract_moments(..., return_features=True)``).
    y_train : array_like of int, shape (N,)
    features_test : array_like, shape (M, L, d), optional
    y_test : array_like of int, shape (M,), optional
    C, max_iter, tol
        Inverse L2 strength and stopping rule of the multinomial logistic probe.
    ridge : float
        Ridge of the least-squares probe on one-hot targets (0: plain least squares).
    num_classes : int, optional
    logistic, mse : bool
        Which probes to train.

    Returns
    -------
    dict of numpy.ndarray
        (L,) arrays ``train_accuracy``, ``test_accuracy``, ``test_kappa`` (Cohen's kappa of the
        held-out predictions), ``converged`` (logistic) and
        ``train_mse``, ``test_mse`` (least squares), NaN where a split or probe was not asked for.
        Each layer is standardised with its own training statistics.

    Examples
    --------
    >>> import numpy as np, ntps
    >>> rng = np.random.default_rng(0)
    >>> y = np.arange(60) % 2
    >>> features = rng.standard_normal((60, 3, 5))
    >>> features[:, 2, 0] += 8 * y                     # only layer 2 carries the label
    >>> out = ntps.probe_layers(features[:40], y[:40], features[40:], y[40:])
    >>> int(np.argmax(out["test_accuracy"])), float(out["test_accuracy"][2])
    (2, 1.0)
    """
    xtr, ytr, xte, yte, c = _split(features_train, y_train, features_test, y_test, num_classes, ndim=3)
    layers = xtr.shape[1]
    out = {name: np.full(layers, np.nan)
           for name in ("train_accuracy", "test_accuracy", "test_kappa", "train_mse", "test_mse")}
    out["converged"] = np.ones(layers, dtype=bool)
    for layer in range(layers):
        ztr, *zte = standardize(xtr[:, layer], *([xte[:, layer]] if xte is not None else []))
        zte = zte[0] if zte else None
        if logistic:
            result = _logistic(ztr, zte, ytr, yte, C=C, max_iter=max_iter, tol=tol)
            out["train_accuracy"][layer], out["test_accuracy"][layer] = result.train_accuracy, result.test_accuracy
            out["test_kappa"][layer] = result.test_kappa
            out["converged"][layer] = result.converged
        if mse:
            result = _mse(ztr, zte, ytr, yte, c, ridge, 1e-10)
            out["train_mse"][layer], out["test_mse"][layer] = result.train_mse, result.test_mse
    return out


def majority_accuracy(train_labels, eval_labels=None, *, num_classes: int | None = None) -> float:
    """Accuracy of always answering the training split's most frequent class: the one definition
    of the majority-class baseline in the package.

    On ``eval_labels`` (a held-out split) when given, else on the training labels themselves (then
    it is the training split's majority share). Ties go to the smallest class index.

    Examples
    --------
    >>> majority_accuracy([0, 1, 1, 2], [1, 0, 0])
    0.3333333333333333
    >>> majority_accuracy([0, 1, 1, 2])
    0.5
    """
    train = np.asarray(train_labels)
    if train.ndim != 1 or train.size == 0 or not np.issubdtype(train.dtype, np.integer) or train.min() < 0:
        raise ValueError("train_labels must be a non-empty 1-d array of class indices 0..C-1")
    majority = int(np.argmax(np.bincount(train, minlength=num_classes or 0)))
    target = train if eval_labels is None else np.asarray(eval_labels)
    if target.size == 0:
        raise ValueError("eval_labels is empty")
    return float(np.mean(target == majority))
