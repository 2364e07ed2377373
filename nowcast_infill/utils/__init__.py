"""Framework helpers shared by the entry points and the LightningModules."""

from nowcast_infill.utils.logging import get_logger, rank_zero_print
from nowcast_infill.utils.config import print_config_tree, register_resolvers, run_id
from nowcast_infill.utils.lr import global_batch_size, scaled_learning_rate, warmup_cosine_schedule
from nowcast_infill.utils.instantiate import instantiate_callbacks, instantiate_loggers, split_reserved

__all__ = [
    "get_logger",
    "rank_zero_print",
    "print_config_tree",
    "register_resolvers",
    "run_id",
    "global_batch_size",
    "scaled_learning_rate",
    "warmup_cosine_schedule",
    "instantiate_callbacks",
    "instantiate_loggers",
    "split_reserved",
]
