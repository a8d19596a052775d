"""Results page: any run by ?run=RUN_ID or from the picker; live while it runs."""

from lib import ui

# No page title: the run's label is the heading, so the charts start higher on screen.
run_id = ui.run_picker()
if run_id and ui.run_panel(run_id, "results"):
    ui.results_details(run_id)
