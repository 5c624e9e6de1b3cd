"""Neural-collapse statistics and metrics (NC1-NC4, CDNV, VCI, ETF errors) and classification accuracy."""
from metrics.accuracy import AccuracyMeter, topk_accuracy, topk_correct
from metrics.nc import ClassStats, NCCAccumulator, NCStats, nc_metrics, nc_metrics_from_stats

__all__ = ["AccuracyMeter", "topk_accuracy", "topk_correct",
           "ClassStats", "NCCAccumulator", "NCStats", "nc_metrics", "nc_metrics_from_stats"]
