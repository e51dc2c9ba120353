from autolab.cli import main

main()
