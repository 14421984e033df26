from llmaas.cli.main import main

main()
