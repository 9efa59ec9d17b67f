from tresen.cli.main import main

main()
