"""`python -m microns_get` runs the command line."""

from microns_get.cli.app import main

if __name__ == "__main__":
    main()
