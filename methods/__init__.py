"""Built-in PRVR methods: importing this package registers them (entry point `prvr_bench.methods`).

Each method module registers its base methods and variants at import; add one import per module.
The import order is the registration order, which ``list_methods()`` keeps, so it is not sorted.
"""
# isort: off
from methods import mean_pool  # noqa: F401
from methods import ms_sl  # noqa: F401
from methods import ms_sl_reference  # noqa: F401  (ms-sl reference checkpoint importer)
from methods import dl_dkd  # noqa: F401
from methods import dl_dkd_reference  # noqa: F401
from methods import kdc_net  # noqa: F401
# isort: on
