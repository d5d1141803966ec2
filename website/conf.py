"""Sphinx configuration of the course's static web site (`make site` builds it into site/).

The pages are the lecture notebooks with their stored outputs: nothing is executed and nothing
is downloaded while building. Source folder: the repository root, limited to the lectures and
this folder's index page.
"""
project = "Deep learning in Jupyter"
author = "the course's authors"
copyright = "the course's authors, MIT licence"

extensions = ["myst_nb"]
root_doc = "website/index"
include_patterns = ["website/index.md", "lectures/*.ipynb"]
exclude_patterns = ["**/.ipynb_checkpoints"]

nb_execution_mode = "off"            # use the outputs stored in the notebooks
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
suppress_warnings = ["mystnb.unknown_mime_type"]

html_theme = "alabaster"
html_title = project
html_theme_options = {"description": "Lectures computed live: every slide example checked.",
                      "fixed_sidebar": True}
html_show_sourcelink = False
html_copy_source = False
html_extra_path = ["_extra"]         # index.html at the site's root, pointing at the first page
